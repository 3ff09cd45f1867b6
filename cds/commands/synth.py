"""``mprtm synth``: generate a synthetic heart-failure follow-up cohort.

Writes FHIR R4 NDJSON, LGE cardiac MRI DICOM series and the truth files (outcomes, true
risks, segmentation masks) into ``--out``; prints the AUROC of the true risk and of the
part of it that each modality carries.  See ``docs/synthetic-cohort.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic HF follow-up cohort (FHIR + DICOM + truth)"
    )
    p.add_argument(
        "--patients", type=int, default=200, metavar="N", help="number of patients (default 200)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (new or empty)"
    )
    p.add_argument("--no-images", action="store_true", help="skip the DICOM series and masks")
    p.add_argument(
        "--image-size",
        type=int,
        default=256,
        metavar="PX",
        help="largest LGE matrix; each study's is its FOV / pixel spacing (default 256)",
    )
    p.add_argument(
        "--slices", type=int, default=10, metavar="S", help="LGE slices per series (default 10)"
    )
    p.add_argument(
        "--reference-date",
        type=_date,
        default=date(2026, 11, 1),
        metavar="YYYY-MM-DD",
        help="the 'as of' date: visits lie before it, outcomes follow it (default 2026-11-01)",
    )
    p.add_argument(
        "--follow-up",
        action="store_true",
        help="also write the year after the reference date as an EHR holds it (deaths, "
        "admissions, MACCE, contacts, loss to follow-up)",
    )
    p.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="case-mix shift, repeatable: age=+10, hfpef=0.6, lge=0.2, assay.nt_probnp=1.3, "
        "risk.female=1.8 (docs/synthetic-cohort.md)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.synth.generate import generate
    from cds.synth.outcomes import MODALITIES
    from cds.synth.shifts import parse_shifts

    if args.slices < 1 or args.slices > 64:
        raise UsageError("--slices must be between 1 and 64")
    shifts = parse_shifts(args.shift)
    t0 = time.perf_counter()
    res = generate(
        args.patients,
        args.seed,
        args.out,
        images=not args.no_images,
        image_size=args.image_size,
        n_slices=args.slices,
        reference_date=args.reference_date,
        progress=not args.quiet,
        follow_up=args.follow_up,
        shifts=shifts,
    )
    dt = time.perf_counter() - t0
    _say(f"wrote {args.patients} patients to {args.out} in {dt:.1f} s")
    _say(
        "  " + ", ".join(f"{k} {v}" for k, v in res.counts.items()) + f", DICOM files {res.n_dicom}"
    )
    cols = ["true_risk", *(f"{m}_only" for m in MODALITIES), *(f"without_{m}" for m in MODALITIES)]
    _say("AUROC of the true 1-year risk (labels sampled from it) and of each modality's part:")
    _say(f"  {'outcome':<30}{'prev':>6}" + "".join(f"{c:>17}" for c in cols))
    for outcome, row in res.signal.items():
        _say(
            f"  {outcome:<30}{row['prevalence']:>6.2f}" + "".join(f"{row[c]:>17.3f}" for c in cols)
        )
    _say(f"  (also in {args.out / 'truth' / 'modality_signal.json'})")
    return 0
