"""``mprtm audit export --since DATE [--out FILE]``: write the audit trail out as NDJSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from cds.config import Settings
from cds.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit trail (FHIR AuditEvent) of access to patient data")
    inner = p.add_subparsers(dest="audit_command", required=True)
    e = inner.add_parser(
        "export", help="write every AuditEvent recorded since a date as NDJSON (one per line)"
    )
    e.add_argument("--since", required=True, help="first UTC day to export (YYYY-MM-DD)")
    e.add_argument("--out", default="-", help="output file (default: standard output)")
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from cds.audit import export_events

    try:
        since = dt.date.fromisoformat(args.since)
    except ValueError:
        raise ConfigError(f"--since {args.since!r} is not a date (YYYY-MM-DD)") from None
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    n = 0
    try:
        for event in export_events(settings, since):
            out.write(json.dumps(event) + "\n")
            n += 1
    except httpx.HTTPError as exc:
        print(f"error: the audit repository cannot be read ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {n} audit events since {since.isoformat()}", file=sys.stderr)
    return 0
