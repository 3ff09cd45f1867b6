"""``mprtm import-csv``: the seed study's CSV format into the cohort layout.

Writes ``DIR/fhir/*.ndjson`` and ``DIR/truth/labels.csv``; rows with a bad cell are
reported by row and column (also in ``DIR/import-errors.csv``) and skipped, the others
are imported.  Exit status 1 when any row was rejected.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from cds.commands.synth import _date
from cds.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-csv", help="import the seed study's CSV format (FHIR NDJSON + labels)"
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the CSV file")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--reference-date",
        type=_date,
        default=date(2026, 11, 1),
        metavar="YYYY-MM-DD",
        help="date given to the imported observations (default 2026-11-01)",
    )
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.synth.seed_import import import_seed_csv

    res = import_seed_csv(args.file, args.out, args.reference_date)
    for err in res.errors:
        sys.stderr.write(f"mprtm: import-csv: {err}\n")
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    sys.stdout.write(f"imported {res.patients} of {res.rows} rows into {args.out}: {counts}\n")
    if res.errors:
        rejected = len({e.row for e in res.errors})
        sys.stdout.write(f"{rejected} rows rejected; see {args.out / 'import-errors.csv'}\n")
        return 1
    return 0
