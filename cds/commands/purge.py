"""``mprtm purge [--dry-run]``: delete data older than the ``[retention]`` limits."""

from __future__ import annotations

import argparse
from typing import Any

from cds.config import Settings
from cds.db import make_engine, session_factory


def register(sub: Any) -> None:
    p = sub.add_parser(
        "purge", help="delete predictions, runs and cache entries past the [retention] limits"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.retention import purge

    engine = make_engine(settings.database.url)
    try:
        report = purge(settings, session_factory(engine), dry_run=args.dry_run)
    finally:
        engine.dispose()
    for line in report.lines():
        print(line)
    return 0
