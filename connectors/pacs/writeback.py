"""Sending result instances (SEG, SR, secondary capture) to a PACS, through an outbox.

Each instance is first written to the outbox folder as ``<SOPInstanceUID>.dcm`` (atomic
rename), then the whole outbox is sent: by C-STORE (:func:`connectors.pacs.store.send_files`,
associations retried with backoff) or by STOW-RS (``POST {root}/studies/{study}``, one
``multipart/related; type="application/dicom"`` request per study; timeouts, connection
errors, 429 and 5xx retried with backoff honouring ``Retry-After``).  A file the PACS
stored leaves the outbox; one that was not stays there and goes with the next send, so a
PACS that is down loses nothing.  Instances carry deterministic UIDs, so sending one
again is harmless: a PACS keeps the instance it already holds.

Nothing here raises for a network failure: every send answers a
:class:`~connectors.pacs.store.StoreSummary` naming the files that failed and why.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import httpx
import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from connectors.errors import DicomInvalid
from connectors.pacs._assoc import Peer
from connectors.pacs._retry import RetryPolicy
from connectors.pacs.cache import check_uid
from connectors.pacs.dicomweb import dicomweb_client
from connectors.pacs.store import StoreFailure, StoreSummary, send_files

log = logging.getLogger("connectors.pacs.writeback")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


class Sender(Protocol):
    """Sends DICOM files to a PACS; never raises for a network failure."""

    def send(self, paths: Sequence[Path]) -> StoreSummary: ...

    def close(self) -> None: ...


class DimseSender:
    """C-STORE to ``peer`` (its retry policy applies to associations).

    Args:
        peer: the PACS' address, AE titles, timeouts and retries.
    """

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def send(self, paths: Sequence[Path]) -> StoreSummary:
        return send_files(paths, self.peer)

    def close(self) -> None:
        return None


class StowSender:
    """STOW-RS to a DICOMweb root.

    Args:
        base_url: the DICOMweb root, e.g. ``https://pacs.example.org/dicom-web``.
        auth: "none", "basic" (``username``/``password``) or "bearer" (``token``).
        username: user for basic authentication.
        password: password for basic authentication.
        token: bearer token.
        timeout_s: timeout of each request.
        retry: retries of timeouts, connection errors, 429 and 5xx answers.
        transport: an httpx transport (proxies); None for the default.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Literal["none", "basic", "bearer"] = "none",
        username: str = "",
        password: str = "",
        token: str = "",
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"DICOMweb URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._client = dicomweb_client(
            auth=auth,
            username=username,
            password=password,
            token=token,
            timeout_s=timeout_s,
            transport=transport,
            accept="application/dicom+json",
        )

    def close(self) -> None:
        self._client.close()

    def send(self, paths: Sequence[Path]) -> StoreSummary:
        summary = StoreSummary(total=len(paths))
        studies: dict[str, list[tuple[Path, str]]] = defaultdict(list)
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                study = check_uid(str(ds.StudyInstanceUID), "StudyInstanceUID")
                studies[study].append((path, str(ds.SOPInstanceUID)))
            except (
                InvalidDicomError,
                DicomInvalid,
                OSError,
                ValueError,
                AttributeError,
                EOFError,
            ) as exc:
                summary.failures.append(
                    StoreFailure(path, f"not a readable DICOM file ({type(exc).__name__})")
                )
        for study, items in studies.items():
            self._send_study(study, items, summary)
        return summary

    def _send_study(self, study: str, items: list[tuple[Path, str]], summary: StoreSummary) -> None:
        url = f"{self.base_url}/studies/{study}"
        boundary = secrets.token_hex(16)
        body = bytearray()
        for path, _ in items:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        reason = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait = 0.0
            try:
                rsp = self._client.post(
                    url, content=bytes(body), headers={"Content-Type": content_type}
                )
            except httpx.TransportError as exc:  # timeouts included
                reason = f"connection error ({type(exc).__name__})"
            else:
                if rsp.status_code not in RETRY_STATUSES:
                    self._read_answer(rsp, items, summary)
                    return
                reason = f"HTTP {rsp.status_code}"
                wait = _retry_after(rsp.headers.get("Retry-After"))
            if attempt < self.retry.attempts:
                log.warning("STOW-RS study %s: %s; retry %d", study, reason, attempt)
                self.retry.sleep(attempt, wait)
        summary.association_error = f"STOW-RS {url}: failed after {self.retry.attempts} attempt(s)"
        for path, _ in items:
            summary.failures.append(StoreFailure(path, f"not sent: {reason}"))

    @staticmethod
    def _read_answer(
        rsp: httpx.Response, items: list[tuple[Path, str]], summary: StoreSummary
    ) -> None:
        """200: all stored; 202/409: the FailedSOPSequence names the failures; other: all
        failed with the HTTP status."""
        failed: dict[str, str] = {}
        if rsp.status_code in (202, 409):
            try:
                answer = rsp.json()
                seq = answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", []) or []
                for item in seq:
                    uid = (item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or [""])[0]
                    code = (item.get(FAILURE_REASON, {}).get("Value") or [0])[0]
                    failed[str(uid)] = f"STOW-RS failure reason 0x{int(code):04X}"
            except (ValueError, TypeError, AttributeError):
                failed = {uid: f"HTTP {rsp.status_code}" for _, uid in items}
        elif rsp.status_code != 200:
            failed = {uid: f"HTTP {rsp.status_code}" for _, uid in items}
        for path, uid in items:
            if uid in failed:
                summary.failures.append(StoreFailure(path, failed[uid]))
            else:
                summary.sent += 1


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


class Outbox:
    """A folder of instances waiting for the PACS, and the sender that drains it.

    Args:
        folder: the outbox (created when missing).
        sender: how the files reach the PACS.
    """

    def __init__(self, folder: str | os.PathLike[str], sender: Sender) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sender = sender

    def put(self, datasets: Sequence[Dataset]) -> list[Path]:
        """Write each dataset as ``<SOPInstanceUID>.dcm`` (replacing a pending copy)."""
        paths = []
        for ds in datasets:
            uid = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
            final = self.folder / f"{uid}.dcm"
            tmp = self.folder / f".{uid}.{os.getpid()}.tmp"
            ds.save_as(tmp, enforce_file_format=True)
            os.replace(tmp, final)
            paths.append(final)
        return paths

    def pending(self) -> list[Path]:
        """Files not yet stored by the PACS, oldest first."""
        return sorted(self.folder.glob("*.dcm"), key=lambda p: (p.stat().st_mtime, p.name))

    def flush(self) -> StoreSummary:
        """Send every pending file; remove those the PACS stored."""
        paths = self.pending()
        if not paths:
            return StoreSummary()
        summary = self.sender.send(paths)
        failed = {f.path for f in summary.failures}
        for path in paths:
            if path not in failed:
                path.unlink(missing_ok=True)
        if summary.failures:
            log.warning(
                "PACS write-back: %d of %d instance(s) not stored, kept in the outbox: %s",
                len(summary.failures),
                len(paths),
                summary.failures[0].reason,
            )
        return summary

    def close(self) -> None:
        self.sender.close()
