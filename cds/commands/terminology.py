"""``mprtm terminology refresh|show``: the value sets of the condition and medication flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cds.config import Settings
from cds.terminology import activate, shipped_valuesets
from cds.terminology.refresh import refresh


def register(sub: Any) -> None:
    p = sub.add_parser("terminology", help="value sets of the condition and medication flags")
    tsub = p.add_subparsers(dest="terminology_command", metavar="ACTION")
    tsub.required = True
    r = tsub.add_parser(
        "refresh",
        help="expand every value set through terminology.url and cache it in the database",
    )
    r.set_defaults(handler=_refresh)
    s = tsub.add_parser("show", help="each value set, its code count and where it came from")
    s.set_defaults(handler=_show)


def _refresh(args: argparse.Namespace, settings: Settings) -> int:
    results = refresh(settings)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            sys.stdout.write(f"{r.valueset_id:<28} not refreshed: {r.error}\n")
        else:
            sys.stdout.write(f"{r.valueset_id:<28} {r.shipped:>6} shipped {r.expanded:>6} cached\n")
    sys.stdout.write(f"{len(results) - failed} of {len(results)} value sets refreshed\n")
    return 1 if failed else 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    terminology = activate(settings)
    for vs in shipped_valuesets():
        name = str(vs["name"])
        n = len(terminology.codes(name))
        sys.stdout.write(f"{vs['id']:<28} {n:>6} codes  {terminology.origin.get(name, '')}\n")
    return 0
