"""``mprtm load-dicom DIR --pacs HOST:PORT --called-aet AET [--calling-aet AET]``.

Sends every DICOM file under DIR to a PACS by C-STORE with a progress bar, then prints a
summary: how many were stored, and each failure by file name with its status or reason.
One bad file never stops the others.  Exit status 0 when everything was stored, 1 when
something failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cds.config import Settings
from cds.errors import UsageError
from connectors.errors import ConnectorError
from connectors.pacs.factory import NetworkSourceParams, Peer, make_peer
from connectors.pacs.store import StoreSummary, scan_folder, send_files

#: Failures listed one by one in the summary; the rest are counted.
MAX_LISTED = 50


def register(sub: Any) -> None:
    p = sub.add_parser(
        "load-dicom",
        help="send a folder of DICOM files to a PACS by C-STORE",
        description="Send every DICOM file under DIR to a PACS by C-STORE.",
    )
    p.add_argument("dir", metavar="DIR", help="folder of DICOM files (searched recursively)")
    p.add_argument(
        "--pacs", metavar="HOST:PORT", default=None, help="PACS address (default: [pacs] host:port)"
    )
    p.add_argument(
        "--called-aet", default=None, help="the PACS' AE title (default: pacs.called_aet)"
    )
    p.add_argument("--calling-aet", default=None, help="our AE title (default: pacs.calling_aet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_load)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--pacs must be HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"--pacs port must be a number, got {port!r}") from None
    if not 0 < number < 65536:
        raise UsageError(f"--pacs port {number} out of range")
    return host.strip("[]"), number


def _load(args: argparse.Namespace, settings: Settings) -> int:
    pacs = settings.pacs
    host, port = _host_port(args.pacs) if args.pacs else (pacs.host, pacs.port)
    root = Path(args.dir)
    if not root.exists():
        raise UsageError(f"load-dicom: {root} does not exist")
    try:
        peer = make_peer(
            NetworkSourceParams(
                kind="dimse",
                cache_dir=pacs.cache_dir,
                host=host,
                port=port,
                called_aet=args.called_aet or pacs.called_aet,
                calling_aet=args.calling_aet or pacs.calling_aet,
                assoc_timeout_s=pacs.assoc_timeout_s,
                dimse_timeout_s=pacs.dimse_timeout_s,
                network_timeout_s=pacs.network_timeout_s,
                max_retries=pacs.max_retries,
                retry_backoff_s=pacs.retry_backoff_s,
                tls=pacs.tls,
                tls_ca_file=pacs.tls_ca_file,
                tls_cert_file=pacs.tls_cert_file,
                tls_key_file=pacs.tls_key_file,
            )
        )
    except ValueError as exc:
        raise UsageError(f"load-dicom: {exc}") from exc
    paths = scan_folder(root)
    if not paths:
        raise UsageError(f"load-dicom: no files under {root}")
    bar = tqdm(total=len(paths), unit="file", desc="C-STORE", disable=args.no_progress or None)
    try:
        summary = send_files(paths, peer, on_file=lambda _p, _ok: bar.update(1))
    except ConnectorError as exc:
        bar.close()
        sys.stderr.write(f"mprtm: load-dicom: {exc}\n")
        return 1
    bar.close()
    sys.stdout.write(_report(summary, root, peer))
    return 0 if summary.ok else 1


def _report(summary: StoreSummary, root: Path, peer: Peer) -> str:
    lines = [
        f"load-dicom: stored {summary.sent} of {summary.total} file(s) on "
        f"{peer.called_aet}@{peer.host}:{peer.port}"
        + (f" ({summary.warnings} with a warning status)" if summary.warnings else "")
    ]
    if summary.association_error:
        lines.append(f"association: {summary.association_error}")
    if summary.failures:
        lines.append(f"{len(summary.failures)} file(s) failed:")
        for failure in summary.failures[:MAX_LISTED]:
            try:
                name = failure.path.relative_to(root)
            except ValueError:
                name = failure.path
            lines.append(f"  {name}: {failure.reason}")
        if len(summary.failures) > MAX_LISTED:
            lines.append(f"  ... and {len(summary.failures) - MAX_LISTED} more")
    return "\n".join(lines) + "\n"
