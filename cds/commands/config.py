"""``mprtm config check``: validate and print the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cds.config import Settings, masked_dict


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    chk = csub.add_parser("check", help="validate and print the effective configuration")
    chk.set_defaults(handler=_check)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    source = settings.source_file or "<built-in defaults>"
    print(f"# configuration OK: {source}")
    print(json.dumps(masked_dict(settings), indent=2, sort_keys=True))
    return 0
