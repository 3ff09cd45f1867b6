"""``mprtm outcomes --as-of DATE --out labels.csv [--ndjson DIR]``: 1-year outcome labels
derived from FHIR (deaths, admissions, diagnoses, procedures); see ``docs/outcomes.md``.

Reads the configured FHIR source (``fhir.source``: an NDJSON folder or a REST server), or
``--ndjson DIR``; the cohort is ``--cohort`` (default ``batch.cohort``).  Writes
``labels.csv`` and ``labels-report.json`` beside it.  ``--truth FILE`` (a simulator's
``truth/labels.csv``) adds the agreement per outcome to the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError
from connectors.errors import FhirError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def register(sub: Any) -> None:
    p = sub.add_parser("outcomes", help="derive 1-year outcome labels from FHIR")
    p.add_argument("--as-of", required=True, type=_date, metavar="YYYY-MM-DD",
                   help="index date: outcomes are counted in the 365 days after it")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, metavar="labels.csv")
    p.add_argument("--ndjson", type=Path, metavar="DIR", help="read this NDJSON folder instead "
                   "of the configured FHIR source")  # fmt: skip
    p.add_argument("--cohort", default=None, help="all | group:<id> | search:<query> "
                   "(default: batch.cohort)")  # fmt: skip
    p.add_argument("--data-cut", type=_date, default=None, metavar="YYYY-MM-DD",
                   help="ignore anything dated after this day (the export date)")  # fmt: skip
    p.add_argument("--truth", type=Path, default=None, metavar="FILE",
                   help="reference labels, e.g. truth/labels.csv")  # fmt: skip
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.outcomes.derive import NdjsonRaw, RestRaw, derive_all, read_truth, write
    from cds.sources import make_fhir_rest_source
    from connectors.fhir.ndjson import NdjsonFolderSource
    from model.types import OUTCOMES

    cohort = args.cohort or settings.batch.cohort
    truth = None
    if args.truth is not None:
        if not args.truth.is_file():
            raise UsageError(f"--truth {args.truth}: no such file")
        truth = read_truth(args.truth)
    data_cut = args.data_cut or dt.date.max
    if args.data_cut and args.data_cut <= args.as_of:
        raise UsageError("--data-cut must be after --as-of")
    closer: Any = None
    try:
        if args.ndjson is not None or settings.fhir.source == "ndjson":
            folder = args.ndjson or Path(settings.fhir.ndjson_dir)
            nd = NdjsonFolderSource(folder)
            closer = nd
            raw: Any = NdjsonRaw(nd, cohort)
        else:
            rest = make_fhir_rest_source(settings)
            closer = rest
            raw = RestRaw(rest.http, rest.cohort_patient_ids(cohort))
        derived = derive_all(raw, args.as_of, data_cut)
    except FhirError as exc:
        raise UsageError(f"outcomes: {exc}") from None
    finally:
        if closer is not None:
            closer.close()
    rep = write(derived, args.out, truth)
    lines = [
        f"wrote {args.out} and labels-report.json: {rep['labelled']} of {rep['patients']} "
        f"patients labelled, {len(rep['censored'])} with censored outcomes, "
        f"{len(rep['warnings'])} warnings"
    ]
    for k in OUTCOMES:
        row = rep["outcomes"][k]
        line = (
            f"  {k:<30} events {row['events']:>5}  non-events {row['non_events']:>5}  "
            f"censored {row['censored']:>4}"
        )
        if truth is not None:
            a = rep["agreement"][k]
            line += f"  agreement {a['agree']}/{a['compared']} = {a['agreement']}"
        lines.append(line)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
