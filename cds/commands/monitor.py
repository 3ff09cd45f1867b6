"""``mprtm monitor [--json] [--run RUN_ID] [--labels labels.csv]``: drift, realised
performance and operations of the active and shadow versions (:mod:`cds.monitor`).

Exit status 0: no ``[monitoring]`` threshold crossed; 4: at least one crossed (an admin
alert was raised and a warning logged).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope


def register(sub: Any) -> None:
    p = sub.add_parser("monitor", help="input/output drift, realised performance, operations")
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--run", type=int, default=None, metavar="RUN_ID",
                   help="the batch run to check (default: the latest completed)")  # fmt: skip
    p.add_argument("--labels", type=Path, default=None, metavar="labels.csv",
                   help="`mprtm outcomes` labels for realised performance")  # fmt: skip
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.monitor import EXIT_CROSSED, check, read_labels

    labels = read_labels(args.labels, settings.alerts.outcome) if args.labels else None
    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            reports = check(s, settings, run_id=args.run, labels=labels)
    finally:
        engine.dispose()
    crossed = any(r["crossed"] for r in reports)
    if args.json:
        print(json.dumps({"crossed": crossed, "versions": reports}, indent=2))
    else:
        for r in reports:
            what = ", ".join(r["crossed"]) or "nothing crossed"
            print(
                f"model version {r['model_version_id']} ({r['state']}), run {r['run_id']}: {what}"
            )
    return EXIT_CROSSED if crossed else 0
