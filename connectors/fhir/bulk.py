"""FHIR Bulk Data export client (HL7 Bulk Data Access IG, asynchronous request pattern).

1. Kick-off: ``GET [base]/Group/<id>/$export`` or ``[base]/Patient/$export`` (or the
   system level) with ``Accept: application/fhir+json``, ``Prefer: respond-async``,
   ``_outputFormat=application/fhir+ndjson`` and optional ``_type`` / ``_since``; the
   server answers ``202`` with the status URL in ``Content-Location``.
2. Poll the status URL: ``202`` (with ``X-Progress``) means wait -- for ``Retry-After``
   seconds when the server sends it, else an exponential backoff; ``429`` is waited out
   the same way; ``200`` carries the JSON manifest.  An error status whose
   OperationOutcome has only *transient* issue codes (``transient`` and its children
   ``lock-error``, ``no-store``, ``exception``, ``timeout``, ``incomplete``, ``throttled``)
   is waited out too, as the IG allows for polling failures that are not failures of the
   job; any other error status ends the export at once (no retries) with the server's
   diagnostics.
3. Download each output file streamed into ``<folder>/<Type>.<nnn>.ndjson`` (the layout
   the NDJSON folder source reads), checking the line count against the manifest, each
   error file into ``<folder>/errors/`` (its OperationOutcome diagnostics are reported in
   :attr:`BulkResult.errors`) and each ``deleted`` file (Bundles of ``DELETE`` entries for
   resources removed since ``_since``) into ``<folder>/deleted/``; the deleted references
   are in :attr:`BulkResult.deleted`.  Then the job is deleted on the server (``DELETE``
   status URL), as the IG asks of clients that are done -- after a failed download too.

Output files are fetched with our credentials only when the manifest says
``requiresAccessToken`` and they are on the FHIR server's own origin or on an origin the
configuration names (``file_origins``, exact scheme, host and port); a token-protected file
elsewhere is refused, never sent our token.  (The smart-configuration has no member that
names file hosts, so only the configuration can.)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from connectors.errors import FhirError
from connectors.fhir._http import FhirHttp, outcome_text, parse_retry_after, redact_url

log = logging.getLogger("connectors.fhir.bulk")

NDJSON_FORMAT = "application/fhir+ndjson"
#: IssueType ``transient`` and its children (FHIR R4 ValueSet issue-type).
TRANSIENT_CODES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)


@dataclass
class BulkFile:
    """One downloaded output file."""

    type: str
    path: Path
    lines: int
    expected: int | None = None


@dataclass
class BulkResult:
    """What an export produced: files by type, error diagnostics, timing."""

    folder: Path
    transaction_time: str = ""
    files: list[BulkFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: ``Type/id`` of resources the server reports deleted (manifest ``deleted``).
    deleted: list[str] = field(default_factory=list)
    polls: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.type] = out.get(f.type, 0) + f.lines
        return out


class BulkExportError(FhirError):
    """The export was refused, failed on the server or did not finish in time."""


class BulkExporter:
    """Runs Bulk Data exports against one FHIR server.

    Args:
        http: the server's :class:`FhirHttp` (auth, retries, timeouts).
        timeout_s: give up an export that has not finished after this long.
        min_poll_s / max_poll_s: backoff bounds when the server sends no Retry-After.
        progress: show tqdm progress bars (None: only on a terminal).
        file_origins: origins (``https://files.example.org``; scheme, host and port compared)
            besides the FHIR server's that may receive our token for ``requiresAccessToken``
            output files.
    """

    def __init__(
        self,
        http: FhirHttp,
        *,
        timeout_s: float = 3600.0,
        min_poll_s: float = 1.0,
        max_poll_s: float = 120.0,
        progress: bool | None = None,
        file_origins: Sequence[str] = (),
    ) -> None:
        self.http = http
        self.file_origins = frozenset(_origin(o) for o in file_origins)
        self.timeout_s = timeout_s
        self.min_poll_s = min_poll_s
        self.max_poll_s = max_poll_s
        self.progress = progress

    # -------------------------------------------------------------- steps
    def kick_off(
        self,
        *,
        group_id: str | None = None,
        level: str = "patient",
        types: Sequence[str] = (),
        since: dt.datetime | str | None = None,
    ) -> str:
        """Start an export; return the status URL.

        ``group_id`` selects ``Group/<id>/$export``; else ``level`` is "patient"
        (``Patient/$export``) or "system" (``$export``).
        """
        if group_id:
            path = f"Group/{group_id}/$export"
        elif level == "patient":
            path = "Patient/$export"
        elif level == "system":
            path = "$export"
        else:
            raise ValueError("level must be 'patient' or 'system' (or give group_id)")
        params: dict[str, str] = {"_outputFormat": NDJSON_FORMAT}
        if types:
            params["_type"] = ",".join(types)
        if since is not None:
            if isinstance(since, dt.datetime):
                if since.tzinfo is None:
                    raise ValueError("_since must be timezone-aware")
                since = since.isoformat()
            params["_since"] = str(since)
        resp = self.http.request(
            "GET",
            path,
            params=params,
            headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
            what=f"bulk kick-off {path}",
        )
        if resp.status_code != 202:
            raise BulkExportError(
                f"bulk kick-off {path}: expected 202 Accepted, got {resp.status_code}",
                status=resp.status_code,
            )
        status_url = resp.headers.get("Content-Location", "")
        if not status_url:
            raise BulkExportError(f"bulk kick-off {path}: 202 without Content-Location")
        log.info("bulk export started: %s", redact_url(status_url))
        return status_url

    def wait(self, status_url: str, result: BulkResult | None = None) -> dict[str, Any]:
        """Poll until the manifest is ready; return it."""
        deadline = time.monotonic() + self.timeout_s
        delay = self.min_poll_s
        polls = 0
        bar = tqdm(total=100, desc="bulk export", unit="%", disable=self._no_bar(), leave=False)
        try:
            while True:
                resp = self._poll(status_url)
                polls += 1
                if result is not None:
                    result.polls = polls
                if resp.status_code == 200:
                    bar.update(100 - bar.n)
                    manifest = self.http.decode(resp, "bulk status (manifest)")
                    if not isinstance(manifest.get("output"), list):
                        raise BulkExportError("bulk manifest has no output list")
                    return manifest
                if resp.status_code != 202:
                    raise BulkExportError(
                        f"bulk status: unexpected HTTP {resp.status_code}",
                        status=resp.status_code,
                    )
                progress = resp.headers.get("X-Progress", "")
                pct = _percent(progress)
                if pct is not None and pct > bar.n:
                    bar.update(pct - bar.n)
                if progress:
                    bar.set_postfix_str(progress[:40])
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                if wait is None:
                    wait, delay = delay, min(delay * 2, self.max_poll_s)
                wait = min(wait, self.max_poll_s)
                if time.monotonic() + wait > deadline:
                    raise BulkExportError(
                        f"bulk export did not finish within {self.timeout_s:.0f}s "
                        f"({polls} polls; last progress {progress or 'unknown'})"
                    )
                log.debug(
                    "bulk status %s (%s); next poll in %.1fs", resp.status_code, progress, wait
                )
                time.sleep(wait)
        finally:
            bar.close()

    def _poll(self, status_url: str) -> httpx.Response:
        """One status request; a wait (429, transient OperationOutcome) comes back as a
        synthetic 202 carrying the server's ``Retry-After``; a final error raises."""
        try:
            return self.http.request(
                "GET",
                status_url,
                headers={"Accept": "application/json"},
                what="bulk status",
                retry_statuses=frozenset({429}),
            )
        except FhirError as exc:
            codes = set(exc.issue_codes)
            if exc.status == 429 or (codes and codes <= TRANSIENT_CODES):
                log.info("bulk status: HTTP %s (%s), waiting", exc.status, ",".join(codes))
                return httpx.Response(202, headers={"X-Progress": f"waiting ({exc.status})"})
            raise BulkExportError(f"bulk export failed: {exc}", status=exc.status) from None

    def download(self, manifest: dict[str, Any], folder: Path, result: BulkResult) -> None:
        """Stream every output and error file of ``manifest`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        auth = bool(manifest.get("requiresAccessToken"))
        result.transaction_time = str(manifest.get("transactionTime", ""))
        seq: dict[str, int] = {}
        for item in manifest.get("output") or []:
            rtype = str(item.get("type") or "Unknown")
            seq[rtype] = seq.get(rtype, 0) + 1
            target = folder / f"{rtype}.{seq[rtype]:03d}.ndjson"
            lines = self._fetch(str(item.get("url", "")), target, auth)
            expected = item.get("count")
            f = BulkFile(rtype, target, lines, expected if isinstance(expected, int) else None)
            if f.expected is not None and f.expected != lines:
                result.warnings.append(f"{target.name}: {lines} lines, manifest said {f.expected}")
            result.files.append(f)
        for n, item in enumerate(manifest.get("error") or [], 1):
            target = folder / "errors" / f"OperationOutcome.{n:03d}.ndjson"
            target.parent.mkdir(exist_ok=True)
            self._fetch(str(item.get("url", "")), target, auth)
            result.errors.extend(_error_lines(target))
        for n, item in enumerate(manifest.get("deleted") or [], 1):
            target = folder / "deleted" / f"Bundle.{n:03d}.ndjson"
            target.parent.mkdir(exist_ok=True)
            self._fetch(str(item.get("url", "")), target, auth)
            result.deleted.extend(_deleted_refs(target, result.warnings))
        for text in result.errors:
            log.warning("bulk export error reported by the server: %s", text)

    def _fetch(self, url: str, target: Path, auth: bool) -> int:
        if not url:
            raise BulkExportError(f"bulk manifest entry for {target.name} has no url")
        own = self.http.same_origin(url)
        trusted = not own and _origin(url) in self.file_origins
        if auth and not (own or trusted):
            raise BulkExportError(
                f"bulk file {redact_url(url)} needs an access token but is on another server "
                "not named in fhir.bulk_file_origins"
            )
        resp = self.http.request(
            "GET",
            url,
            headers={"Accept": "application/fhir+ndjson"},
            use_auth=auth,
            any_origin=not own,
            trusted_origin=trusted,
            stream=True,
            what=f"bulk file {target.name}",
        )
        lines = 0
        last = b"\n"
        tmp = target.with_suffix(".part")
        total = int(resp.headers.get("Content-Length") or 0) or None
        try:
            with (
                tmp.open("wb") as out,
                tqdm(
                    total=total,
                    desc=target.name,
                    unit="B",
                    unit_scale=True,
                    disable=self._no_bar(),
                    leave=False,
                ) as bar,
            ):
                for chunk in resp.iter_bytes():
                    if not chunk:
                        continue
                    out.write(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    bar.update(len(chunk))
                if last != b"\n":
                    out.write(b"\n")
                    lines += 1
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise BulkExportError(
                f"bulk file {target.name}: download broke off ({type(exc).__name__})"
            ) from None
        finally:
            resp.close()
        tmp.replace(target)
        return lines

    def delete(self, status_url: str) -> None:
        """Tell the server we are done (or cancel a running export); errors only logged."""
        try:
            self.http.request("DELETE", status_url, what="bulk job delete")
        except FhirError as exc:
            log.info("bulk job delete not accepted: %s", exc)

    # -------------------------------------------------------------- all steps
    def export(
        self,
        folder: str | Path,
        *,
        group_id: str | None = None,
        level: str = "patient",
        types: Sequence[str] = (),
        since: dt.datetime | str | None = None,
    ) -> BulkResult:
        """Kick off, wait, download into ``folder``; return the :class:`BulkResult`.

        Raises:
            BulkExportError: refused kick-off, failed job, timeout or broken download.
        """
        t0 = time.monotonic()
        result = BulkResult(folder=Path(folder))
        status_url = self.kick_off(group_id=group_id, level=level, types=types, since=since)
        try:
            manifest = self.wait(status_url, result)
        except BaseException:
            self.delete(status_url)
            raise
        try:
            self.download(manifest, Path(folder), result)
        finally:
            self.delete(status_url)
        (Path(folder) / "bulk-manifest.json").write_text(json.dumps(manifest, indent=2))
        result.seconds = time.monotonic() - t0
        log.info(
            "bulk export done in %.1fs: %s; %d error(s)",
            result.seconds,
            result.counts(),
            len(result.errors),
        )
        return result

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BulkExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _no_bar(self) -> bool | None:
        return None if self.progress is None else not self.progress


def _percent(progress: str) -> int | None:
    digits = ""
    for ch in progress:
        if ch.isdigit() or (ch == "." and digits):
            digits += ch
        elif digits:
            break
    try:
        return max(0, min(100, int(float(digits)))) if digits else None
    except ValueError:
        return None


def _error_lines(path: Path) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = outcome_text(json.loads(line))
        except json.JSONDecodeError:
            text = ""
        out.append(text or f"{path.name} line {n}: unreadable OperationOutcome")
    return out


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url.strip())
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _deleted_refs(path: Path, warnings: list[str]) -> list[str]:
    """``Type/id`` of each ``DELETE`` entry of the Bundles in a ``deleted`` file."""
    refs: list[str] = []
    for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            bundle = json.loads(line)
        except json.JSONDecodeError:
            warnings.append(f"{path.name} line {n}: not JSON")
            continue
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            req = entry.get("request") if isinstance(entry, dict) else None
            if isinstance(req, dict) and req.get("method") == "DELETE" and req.get("url"):
                refs.append(str(req["url"]).split("?", 1)[0].strip("/"))
            else:
                warnings.append(f"{path.name} line {n}: an entry is not a DELETE request")
    return refs
