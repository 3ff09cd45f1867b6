"""``mprtm patient features PATIENT_ID``: one patient through the configured connectors.

Prints what the model would get and why: every feature with value, unit, date and source
id, the medication lines and notes used, the selected LGE series with its slice count and
the image quality gate's verdict on it (the configured checkpoint's image network reads the
series; ``--no-model`` skips that), the codes no value set recognised, the warnings and the
basis.  ``--json`` gives the same
as one JSON object.  Note text is only printed with ``--show-text`` (it is clinical free
text).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError
from cds.image_gate import image_status, quality_rules, unusable_text
from cds.mapping import MappedPatient
from cds.pipeline import pull
from cds.sources import make_fhir_source, make_imaging_source
from cds.terminology import activate
from connectors.errors import ConnectorError


def register(sub: Any) -> None:
    p = sub.add_parser("patient", help="inspect one patient's model input")
    psub = p.add_subparsers(dest="patient_command", metavar="ACTION")
    psub.required = True
    f = psub.add_parser(
        "features",
        help="pull one patient through the configured connectors and show the model input",
    )
    f.add_argument("patient_id", metavar="PATIENT_ID", help="FHIR Patient logical id")
    f.add_argument("--json", action="store_true", help="one JSON object on stdout")
    f.add_argument(
        "--as-of", metavar="YYYY-MM-DD", default=None, help="inputs as known on this day (today)"
    )
    f.add_argument(
        "--image-size",
        type=int,
        default=0,
        metavar="PX",
        help="image side in pixels (default: the checkpoint's input size, else 64)",
    )
    f.add_argument(
        "--no-model",
        action="store_true",
        help="do not run the checkpoint's image network on the LGE series (no quality verdict)",
    )
    f.add_argument("--no-images", action="store_true", help="do not query the imaging source")
    f.add_argument("--show-text", action="store_true", help="include the model's text input")
    f.set_defaults(handler=_features)


def _as_of(raw: str | None) -> dt.date:
    if raw is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--as-of: {raw!r} is not a date (YYYY-MM-DD)") from None


def _features(args: argparse.Namespace, settings: Settings) -> int:
    as_of = _as_of(args.as_of)
    if args.image_size and args.image_size < 8:
        raise UsageError("--image-size must be at least 8")
    predictor = None
    if not args.no_model and not args.no_images and Path(settings.model.checkpoint).is_file():
        from model.predictor import Predictor

        predictor = Predictor.from_checkpoint(
            settings.model.checkpoint,
            device=settings.model.device,
            threads=settings.model.cpu_threads,
            text_encoder_path=settings.model.text_encoder or None,
            attribution=False,
            quality_rules=quality_rules(settings),
        )
    size = args.image_size or (predictor.config.input_size if predictor else 64)
    activate(settings)
    fhir = make_fhir_source(settings)
    imaging = None if args.no_images else make_imaging_source(settings)
    try:
        mapped = pull(
            args.patient_id,
            fhir,
            imaging,
            as_of=as_of,
            image_size=size,
            settings=settings,
        )
    except ConnectorError as exc:
        sys.stderr.write(f"mprtm: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        fhir.close()
        if imaging is not None:
            imaging.close()
    status = None
    if predictor is not None:
        feats = None
        mi = mapped.model_input
        if mi.image is not None:
            feats = predictor.encode_image(mi.image, mi.image_spacing_mm)
        status = image_status(mapped, feats)
    if args.json:
        out = mapped.as_dict(include_text=args.show_text)
        out["image_quality"] = status
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(mapped, show_text=args.show_text, image_quality=status))
    return 0


def render_text(
    m: MappedPatient, *, show_text: bool = False, image_quality: dict[str, Any] | None = None
) -> str:
    """A human-readable report of one patient's model input (``image_quality``: the
    gate's verdict on the LGE series, :func:`cds.image_gate.image_status`)."""
    lines = [f"Patient/{m.patient_id} as of {m.as_of.isoformat()}", "", "Features:"]
    for name, fv in sorted(m.features.items()):
        when = fv.date.isoformat() if fv.date else "-"
        orig = f"  (recorded {fv.original})" if fv.original else ""
        lines.append(f"  {name:<28} {fv.value:>12.6g} {fv.unit:<18} {when:<10}  {fv.source}{orig}")
    missing = sorted(
        k for k, v in m.model_input.numeric.items() if v == 0.0 and k.startswith(("cond_", "med_"))
    )
    lines.append(f"  ({len(missing)} condition/medication flags are 0)")
    lines += ["", "Medications:"] + [f"  {x}" for x in m.medications or ["(none)"]]
    lines += ["", "Notes (newest first):"] + [f"  {x}" for x in m.notes or ["(none)"]]
    lines += ["", "LGE series:"]
    s = m.lge_series
    if s is None:
        lines.append("  (none selected)")
    else:
        lines.append(
            f"  {s.series_instance_uid}  '{s.series_description}'  study {s.study_date}  "
            f"{m.n_slices} slices ordered by {m.slice_order or '-'}"
        )
        unusable = unusable_text(image_quality) or (
            f"MRI not used: {m.image_rejected}" if m.image_rejected else None
        )
        if unusable:
            lines.append(f"  {unusable} (treated as no MRI)")
        elif image_quality is not None:
            lines.append(f"  image quality {image_quality['quality']:.2f}: usable")
    lines += ["", "Codes not recognised (in no value set):"]
    lines += [f"  {x}" for x in m.unrecognised or ["(none)"]]
    lines += ["", "Warnings:"] + [f"  {w}" for w in m.warnings or ["(none)"]]
    lines += ["", "Basis:"] + [f"  {b}" for b in m.basis]
    if show_text:
        lines += ["", "Text:", m.model_input.text or "(none)"]
    return "\n".join(lines) + "\n"
