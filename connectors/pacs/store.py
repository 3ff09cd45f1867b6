"""Send DICOM files to a PACS by C-STORE (``mprtm load-dicom``).

The files are read once for their SOP class and transfer syntax; one presentation
context is proposed per (SOP class, transfer syntax) pair, at most 128 per association
as PS3.8 allows.  Each file's status is recorded: a failure (non-DICOM file, rejected
context, failure status) names the file and the reason and never stops the others.  An
association that is refused or aborted is retried with backoff and sending resumes at
the file that was in flight; when the retries are spent the files not sent are reported
as failed with the association's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from connectors.errors import AssociationError
from connectors.pacs._assoc import Interrupted, Peer, run_with_association

log = logging.getLogger("connectors.pacs.store")

MAX_CONTEXTS = 128


@dataclass(frozen=True)
class StoreFailure:
    """A file that was not stored, and why (status code or reason; no dataset content)."""

    path: Path
    reason: str
    status: int | None = None


@dataclass
class StoreSummary:
    """What a C-STORE run did."""

    total: int = 0
    sent: int = 0
    warnings: int = 0
    failures: list[StoreFailure] = field(default_factory=list)
    association_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and not self.association_error


def scan_folder(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursively, hidden files skipped), sorted."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


@dataclass(frozen=True)
class _Item:
    path: Path
    sop_class: str
    transfer_syntax: str


def _read_header(path: Path) -> _Item | StoreFailure:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError) as exc:
        return StoreFailure(path, f"not a readable DICOM file ({type(exc).__name__})")
    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if not sop or not ts:
        return StoreFailure(path, "no SOP Class UID or transfer syntax in the file")
    if "SOPInstanceUID" not in ds:
        return StoreFailure(path, "no SOP Instance UID in the file")
    return _Item(path, sop, ts)


def _batches(items: Sequence[_Item]) -> list[list[_Item]]:
    """Group files so that no association needs more than 128 presentation contexts."""
    batches: list[list[_Item]] = []
    keys: list[set[tuple[str, str]]] = []
    for item in items:
        key = (item.sop_class, item.transfer_syntax)
        for batch, used in zip(batches, keys, strict=True):
            if key in used or len(used) < MAX_CONTEXTS:
                batch.append(item)
                used.add(key)
                break
        else:
            batches.append([item])
            keys.append({key})
    return batches


def send_files(
    paths: Iterable[Path],
    peer: Peer,
    *,
    on_file: Callable[[Path, bool], None] | None = None,
) -> StoreSummary:
    """C-STORE every file of ``paths`` to ``peer``; never raises for one bad file.

    Args:
        paths: files to send.
        peer: the PACS (called AE title, host, port), our AE title, timeouts, retries.
        on_file: called once per file with (path, stored?) (progress bars).
    """
    summary = StoreSummary()
    items: list[_Item] = []
    for path in paths:
        summary.total += 1
        header = _read_header(path)
        if isinstance(header, StoreFailure):
            summary.failures.append(header)
            if on_file:
                on_file(path, False)
        else:
            items.append(header)
    for batch in _batches(items):
        _send_batch(batch, peer, summary, on_file)
    return summary


def _send_batch(
    batch: list[_Item],
    peer: Peer,
    summary: StoreSummary,
    on_file: Callable[[Path, bool], None] | None,
) -> None:
    pairs = sorted({(i.sop_class, i.transfer_syntax) for i in batch})
    contexts = [build_context(sop, [ts]) for sop, ts in pairs]
    pos = 0

    def done(item: _Item, failure: StoreFailure | None, warning: bool = False) -> None:
        nonlocal pos
        pos += 1
        if failure is None:
            summary.sent += 1
            summary.warnings += int(warning)
        else:
            summary.failures.append(failure)
        if on_file:
            on_file(item.path, failure is None)

    def operation(assoc: Association) -> None:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        while pos < len(batch):
            item = batch[pos]
            if (item.sop_class, item.transfer_syntax) not in accepted:
                done(
                    item,
                    StoreFailure(
                        item.path,
                        f"the PACS accepted no presentation context for SOP class "
                        f"{item.sop_class} with transfer syntax {item.transfer_syntax}",
                    ),
                )
                continue
            try:
                status = assoc.send_c_store(item.path)
            except (InvalidDicomError, OSError, ValueError, AttributeError) as exc:
                done(item, StoreFailure(item.path, f"cannot be sent ({type(exc).__name__})"))
                continue
            if "Status" not in status:
                raise Interrupted("C-STORE: no response (association aborted or DIMSE timeout)")
            code = int(status.Status)
            category = code_to_category(code)
            if category in ("Success", "Warning"):
                done(item, None, warning=category == "Warning")
            else:
                comment = str(status.get("ErrorComment", "")).strip()
                done(
                    item,
                    StoreFailure(
                        item.path,
                        f"status 0x{code:04X} ({category})" + (f": {comment}" if comment else ""),
                        status=code,
                    ),
                )

    try:
        run_with_association(peer, contexts, operation, what="C-STORE")
    except AssociationError as exc:
        summary.association_error = str(exc)
        log.error("%s", exc)
        for item in batch[pos:]:
            summary.failures.append(StoreFailure(item.path, f"not sent: {exc.reason}"))
            if on_file:
                on_file(item.path, False)
