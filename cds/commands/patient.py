"""``mprtm patient features PATIENT_ID``: one patient through the configured connectors.

Prints what the model would get and why: every feature with value, unit, date and source
id, the medication lines and notes used, the selected LGE series with its slice count,
the codes no value set recognised, the warnings and the basis.  ``--json`` gives the same
as one JSON object.  Note text is only printed with ``--show-text`` (it is clinical free
text).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from cds.config import Settings
from cds.errors import UsageError
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
        "--image-size", type=int, default=64, metavar="PX", help="image side in pixels (64)"
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
    if args.image_size < 8:
        raise UsageError("--image-size must be at least 8")
    activate(settings)
    fhir = make_fhir_source(settings)
    imaging = None if args.no_images else make_imaging_source(settings)
    try:
        mapped = pull(
            args.patient_id,
            fhir,
            imaging,
            as_of=as_of,
            image_size=args.image_size,
            settings=settings,
        )
    except ConnectorError as exc:
        sys.stderr.write(f"mprtm: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        fhir.close()
        if imaging is not None:
            imaging.close()
    if args.json:
        sys.stdout.write(json.dumps(mapped.as_dict(include_text=args.show_text), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(mapped, show_text=args.show_text))
    return 0


def render_text(m: MappedPatient, *, show_text: bool = False) -> str:
    """A human-readable report of one patient's model input."""
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
    lines += ["", "Codes not recognised (in no value set):"]
    lines += [f"  {x}" for x in m.unrecognised or ["(none)"]]
    lines += ["", "Warnings:"] + [f"  {w}" for w in m.warnings or ["(none)"]]
    lines += ["", "Basis:"] + [f"  {b}" for b in m.basis]
    if show_text:
        lines += ["", "Text:", m.model_input.text or "(none)"]
    return "\n".join(lines) + "\n"
