"""``mprtm bulk-export OUT [--group ID] [--type T,...] [--since INSTANT] [--fhir-url URL]``.

Runs a FHIR Bulk Data ``$export`` (Group or Patient level) against the configured server
with the configured credentials and downloads the NDJSON into OUT, in the layout that
``fhir.source = "ndjson"`` reads (point ``fhir.ndjson_dir`` at OUT to score from it).
Prints the resources per type and every error the server reported.  Exit status 0 when the
server reported no error, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from cds.config import Settings
from cds.errors import MprtmError, UsageError
from cds.sources import make_fhir_rest_source
from connectors.errors import FhirError
from connectors.fhir.bulk import BulkExporter

#: Errors listed one by one; the rest are counted.
MAX_LISTED = 50


class BulkExportFailed(MprtmError):
    """The export could not be run to the end (refused, failed, timed out)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bulk-export",
        help="download a Bulk Data $export into an NDJSON folder",
        description="Run a FHIR Bulk Data $export and download it as NDJSON.",
    )
    p.add_argument("out", metavar="OUT", help="folder the NDJSON files are written to")
    p.add_argument("--group", default=None, help="Group id (Group/<id>/$export)")
    p.add_argument("--type", default="", help="comma-separated resource types (_type)")
    p.add_argument("--since", default=None, help="only resources updated since (_since)")
    p.add_argument("--fhir-url", default=None, help="FHIR base URL (default: fhir.base_url)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_export)


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since must be an ISO 8601 instant, got {value!r}") from None
    if when.tzinfo is None:
        raise UsageError("--since needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return when


def _export(args: argparse.Namespace, settings: Settings) -> int:
    url = args.fhir_url or settings.fhir.base_url
    if not url:
        raise UsageError("bulk-export: give --fhir-url or set fhir.base_url")
    since = _since(args.since)
    types = [t.strip() for t in args.type.split(",") if t.strip()]
    try:
        source = make_fhir_rest_source(settings.replace(fhir__base_url=url))
    except FhirError as exc:
        raise BulkExportFailed(f"bulk-export: {exc}") from None
    exporter = BulkExporter(
        source.http,
        timeout_s=settings.fhir.bulk_timeout_s,
        progress=False if args.no_progress else None,
        file_origins=settings.fhir.bulk_file_origins,
    )
    try:
        result = exporter.export(args.out, group_id=args.group, types=types, since=since)
    except FhirError as exc:
        raise BulkExportFailed(f"bulk-export: {exc}") from None
    finally:
        source.close()
    for rtype, n in sorted(result.counts().items()):
        print(f"{rtype:<24} {n:>8}")
    print(
        f"{len(result.files)} files in {args.out} ({result.seconds:.1f}s, "
        f"transactionTime {result.transaction_time or '?'})"
    )
    if result.deleted:
        print(f"{len(result.deleted)} resources reported deleted (listed in {args.out}/deleted/)")
    for w in result.warnings:
        print(f"warning: {w}")
    for e in result.errors[:MAX_LISTED]:
        print(f"server error: {e}")
    if len(result.errors) > MAX_LISTED:
        print(f"... and {len(result.errors) - MAX_LISTED} more errors")
    return 1 if result.errors else 0
