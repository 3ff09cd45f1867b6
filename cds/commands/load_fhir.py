"""``mprtm load-fhir DIR --fhir-url URL [--batch-size N]``: NDJSON folder -> FHIR server.

Loads DIR (or DIR/fhir) in dependency order as transaction Bundles that keep each
resource's id (``PUT Type/id``), with a progress bar, then prints a summary by resource
type and every rejected resource by type/id with the server's diagnostics (the others are
loaded).  Credentials come from ``[fhir]`` (``auth``, ...).  Exit status 0 when
everything was loaded, 1 when something was rejected or failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from cds.config import Settings
from cds.errors import MprtmError, UsageError
from cds.sources import make_fhir_rest_source
from connectors.errors import FhirError
from connectors.fhir.loader import LoadReport, count_lines, load_folder, ndjson_files

#: Rejections listed one by one in the summary; the rest are counted.
MAX_LISTED = 50


class LoadFhirError(MprtmError):
    """The FHIR server could not be used for loading (unreachable, not R4, refused us)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "load-fhir",
        help="load an NDJSON folder into a FHIR server (ids kept)",
        description="Load a Bulk Data NDJSON folder into a FHIR R4 server as transaction "
        "Bundles in dependency order, keeping every resource's id.",
    )
    p.add_argument("dir", metavar="DIR", help="folder of <Type>.ndjson files (or DIR/fhir)")
    p.add_argument("--fhir-url", default=None, help="FHIR base URL (default: fhir.base_url)")
    p.add_argument(
        "--batch-size", type=int, default=50, help="entries per transaction (default 50)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_load)


def _load(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    url = args.fhir_url or settings.fhir.base_url
    if not url:
        raise UsageError("load-fhir: give --fhir-url or set fhir.base_url")
    try:
        files = ndjson_files(args.dir)
    except FhirError as exc:
        raise UsageError(f"load-fhir: {exc}") from None
    try:
        source = make_fhir_rest_source(settings.replace(fhir__base_url=url))
    except FhirError as exc:
        raise LoadFhirError(f"load-fhir: {exc}") from None
    total = count_lines(files)
    try:
        with tqdm(
            total=total,
            unit="res",
            desc="load-fhir",
            disable=args.no_progress or None,
            file=sys.stderr,
        ) as bar:
            report = load_folder(
                source.client, args.dir, batch_size=args.batch_size, on_progress=bar.update
            )
    except FhirError as exc:
        raise LoadFhirError(f"load-fhir stopped: {exc}") from None
    finally:
        source.close()
    _print_summary(report)
    return 1 if report.rejected else 0


def _print_summary(report: LoadReport) -> None:
    rejected = report.rejected_by_type()
    types = sorted(set(report.loaded) | set(rejected))
    width = max([len(t) for t in types] + [8])
    print(f"{'type':<{width}}  {'loaded':>8}  {'rejected':>8}")
    for t in types:
        print(f"{t:<{width}}  {report.loaded.get(t, 0):>8}  {rejected.get(t, 0):>8}")
    print(f"{'total':<{width}}  {report.total_loaded:>8}  {len(report.rejected):>8}")
    print(
        f"{len(report.files)} files, {report.transactions} transactions"
        + (f", {report.batches} resent as batches" if report.batches else "")
    )
    for r in report.rejected[:MAX_LISTED]:
        print(f"rejected {r.where}: {r.reason}")
    if len(report.rejected) > MAX_LISTED:
        print(f"... and {len(report.rejected) - MAX_LISTED} more rejected")
