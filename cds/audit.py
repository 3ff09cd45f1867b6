"""Audit trail of access to patient data, as FHIR R4 AuditEvent resources (``[audit]``).

Events follow the IHE Basic Audit Log Patterns (BALP): a RESTful-operation type
(``audit-event-type#rest``) with the interaction as subtype, the patient as an entity of
type *Person* and role *Patient*, the requestor as an agent, and this service as the
observing source.  What is recorded (:mod:`cds._audit_events` builds each kind):

* each CDS Hooks call: service, patient, caller ``iss``, outcome;
* each FHIR read of a patient's data by the batch;
* each RiskAssessment write;
* each inbox page view of a patient and each action on an alert.

:meth:`Auditor.record` never blocks and never raises: the event goes into a bounded
queue (when it is full the event is dropped and counted) and a background thread writes
batches to the sink: ``fhir`` POSTs a ``batch`` Bundle to the audit repository, ``ndjson``
appends to ``audit-YYYY-MM-DD.ndjson`` (UTC day of recording).  A batch the FHIR server
cannot take (unreachable, 5xx) is spilled to ``spill_dir`` and sent again, oldest first,
once the server answers.  Counters (recorded, written, spilled, dropped, rejected) are
served on ``/metrics``.  ``mprtm audit export --since DATE`` writes the trail out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cds._audit_events import (
    hook_call_event,
    inbox_action_event,
    page_view_event,
    patient_read_event,
    resource_write_event,
)
from cds.config import Settings
from cds.errors import ConfigError

__all__ = [
    "Auditor",
    "AuditCounters",
    "export_events",
    "hook_call_event",
    "inbox_action_event",
    "make_auditor",
    "page_view_event",
    "patient_read_event",
    "resource_write_event",
]

log = logging.getLogger("mprtm.audit")


class AuditSinkError(Exception):
    """The audit repository did not take a batch (unreachable, 5xx); the batch is spilled."""


@dataclass
class AuditCounters:
    """What the auditor did since it started (served on ``/metrics``)."""

    recorded: int = 0
    written: int = 0
    spilled: int = 0
    dropped: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {
                k: getattr(self, k)
                for k in ("recorded", "written", "spilled", "dropped", "rejected")
            }


class _NdjsonSink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, events: list[dict[str, Any]]) -> int:
        by_day: dict[str, list[str]] = {}
        for e in events:
            by_day.setdefault(str(e["recorded"])[:10], []).append(json.dumps(e) + "\n")
        for day, lines in by_day.items():
            with (self.folder / f"audit-{day}.ndjson").open("a", encoding="utf-8") as fh:
                fh.writelines(lines)
                fh.flush()
                os.fsync(fh.fileno())
        return 0


class _FhirSink:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers={"User-Agent": "mprtm-cds"}
        )

    def write(self, events: list[dict[str, Any]]) -> int:
        """POST one batch Bundle; answers how many entries the server refused (4xx)."""
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": e, "request": {"method": "POST", "url": "AuditEvent"}} for e in events
            ],
        }
        try:
            rsp = self._client.post(
                self.base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}
            )
        except httpx.HTTPError as exc:
            raise AuditSinkError(f"audit repository unreachable ({type(exc).__name__})") from None
        if rsp.status_code >= 500 or rsp.status_code == 429:
            raise AuditSinkError(f"audit repository answered HTTP {rsp.status_code}")
        if rsp.status_code >= 400:
            log.error(
                "audit repository refused a Bundle of %d events: HTTP %d",
                len(events),
                rsp.status_code,
            )
            return len(events)
        entries = rsp.json().get("entry", [])
        refused = [
            e for e in entries if not str(e.get("response", {}).get("status", "")).startswith("2")
        ]  # noqa: E501
        if any(str(e.get("response", {}).get("status", ""))[:1] == "5" for e in refused):
            raise AuditSinkError("audit repository failed entries with 5xx")
        for e in refused:
            log.error(
                "audit repository refused an AuditEvent: %s", e.get("response", {}).get("status")
            )
        return len(refused)

    def close(self) -> None:
        self._client.close()


class Auditor:
    """Non-blocking audit recorder with its writer thread.

    Args:
        sink: ``_FhirSink`` or ``_NdjsonSink``; None records nothing.
        spill_dir: where batches the sink could not take wait.
        queue_size: events waiting at most.
        batch_size: events per write.
        flush_interval_s: longest wait before a write, and between spill retries.
    """

    def __init__(
        self,
        sink: _FhirSink | _NdjsonSink | None,
        *,
        spill_dir: str | os.PathLike[str] = "out/audit-spill",
        queue_size: int = 10000,
        batch_size: int = 50,
        flush_interval_s: float = 2.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("queue_size and batch_size must be >= 1, flush_interval_s > 0")
        self.sink = sink
        self.spill_dir = Path(spill_dir)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.counters = AuditCounters()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.sink is not None

    def record(self, event: dict[str, Any]) -> None:
        """Queue one event; never blocks, never raises (a full queue drops and counts)."""
        if self.sink is None:
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
            self.counters.add("recorded")
        except queue.Full:
            self.counters.add("dropped")

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mprtm-audit", daemon=True)
                self._thread.start()

    def _take(self) -> list[dict[str, Any]]:
        try:
            first = self._queue.get(timeout=self.flush_interval_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        last_retry = 0.0
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take()
            with self._idle:
                self._busy += 1
            try:
                if batch:
                    self._write(batch)
                if time.monotonic() - last_retry >= self.flush_interval_s or batch:
                    last_retry = time.monotonic()
                    self._resend_spilled()
            except Exception:  # noqa: BLE001  (the audit thread must outlive any failure)
                log.exception("audit writer failed")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        assert self.sink is not None
        if self._spilled_files():  # keep the order: older spilled events go first
            self._spill(batch)
            return
        try:
            refused = self.sink.write(batch)
        except AuditSinkError as exc:
            log.warning("%s; %d audit events spilled to disk", exc, len(batch))
            self._spill(batch)
            return
        self.counters.add("written", len(batch) - refused)
        self.counters.add("rejected", refused)

    def _spill(self, batch: list[dict[str, Any]]) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.spill_dir / f".{time.time_ns()}.tmp"
        tmp.write_text("".join(json.dumps(e) + "\n" for e in batch), encoding="utf-8")
        os.replace(tmp, self.spill_dir / f"{time.time_ns()}.ndjson")
        self.counters.add("spilled", len(batch))

    def _spilled_files(self) -> list[Path]:
        if not self.spill_dir.is_dir():
            return []
        return sorted(self.spill_dir.glob("*.ndjson"))

    def _resend_spilled(self) -> None:
        assert self.sink is not None
        for path in self._spilled_files():
            events = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln]
            try:
                refused = self.sink.write(events)
            except AuditSinkError:
                return  # still down: try again after flush_interval_s
            path.unlink()
            self.counters.add("written", len(events) - refused)
            self.counters.add("rejected", refused)
            log.info("%d spilled audit events delivered", len(events) - refused)

    def pending_spill(self) -> int:
        """Events waiting on disk for the audit repository."""
        return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in self._spilled_files())

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the queue is written (spilled events are not waited for)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._idle:
                if self._queue.empty() and self._busy == 0:
                    return True
                self._idle.wait(timeout=0.05)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s + self.flush_interval_s)
        if isinstance(self.sink, _FhirSink):
            self.sink.close()

    def metrics_text(self) -> str:
        """The counters in the Prometheus text format."""
        c = self.counters.as_dict()
        lines = []
        for name, value in c.items():
            metric = f"mprtm_audit_events_{name}_total"
            lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
        lines += [
            "# TYPE mprtm_audit_queue_depth gauge",
            f"mprtm_audit_queue_depth {self._queue.qsize()}",
        ]
        return "\n".join(lines) + "\n"


def make_auditor(settings: Settings) -> Auditor:
    """The auditor of ``[audit]`` (a disabled one for ``sink = "none"``).

    Raises:
        ConfigError: ``sink = "fhir"`` without a URL, or bad sizes (names the key).
    """
    a = settings.audit
    sink: _FhirSink | _NdjsonSink | None = None
    if a.sink == "fhir":
        url = a.fhir_url or settings.fhir.base_url
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                "audit.fhir_url (or fhir.base_url) must be an http(s) URL when audit.sink = 'fhir'"
            )
        sink = _FhirSink(url, a.timeout_s)
    elif a.sink == "ndjson":
        sink = _NdjsonSink(Path(a.ndjson_dir))
    try:
        return Auditor(
            sink,
            spill_dir=a.spill_dir,
            queue_size=a.queue_size,
            batch_size=a.batch_size,
            flush_interval_s=a.flush_interval_s,
        )
    except ValueError as exc:
        raise ConfigError(f"[audit]: {exc}") from None


def export_events(settings: Settings, since: dt.date) -> Iterator[dict[str, Any]]:
    """Every AuditEvent recorded on or after ``since`` (UTC day): from the NDJSON files,
    or searched on the FHIR audit repository (``AuditEvent?date=ge``, every page); then
    the events still spilled on disk.

    Raises:
        ConfigError: ``sink = "none"``.
        httpx.HTTPError: the FHIR audit repository cannot be read.
    """
    a = settings.audit
    if a.sink == "none":
        raise ConfigError("audit.sink is 'none': there is no audit trail to export")
    if a.sink == "ndjson":
        folder = Path(a.ndjson_dir)
        for path in sorted(folder.glob("audit-*.ndjson")):
            if path.stem.removeprefix("audit-") >= since.isoformat():
                with path.open(encoding="utf-8") as fh:
                    yield from (json.loads(ln) for ln in fh if ln.strip())
    else:
        base = (a.fhir_url or settings.fhir.base_url).rstrip("/")
        url: str | None = f"{base}/AuditEvent?date=ge{since.isoformat()}&_count=100"
        with httpx.Client(timeout=a.timeout_s) as client:
            while url:
                rsp = client.get(url, headers={"Accept": "application/fhir+json"})
                rsp.raise_for_status()
                page = rsp.json()
                yield from (e["resource"] for e in page.get("entry", []) if "resource" in e)
                url = next(
                    (ln["url"] for ln in page.get("link", []) if ln.get("relation") == "next"), None
                )
    spill = Path(a.spill_dir)
    if spill.is_dir():
        for path in sorted(spill.glob("*.ndjson")):
            for ln in path.read_text(encoding="utf-8").splitlines():
                if ln.strip():
                    event = json.loads(ln)
                    if str(event.get("recorded", ""))[:10] >= since.isoformat():
                        yield event


@contextlib.contextmanager
def auditing(settings: Settings) -> Iterator[Auditor]:
    """An auditor for the length of a command (closed, and so written, at the end)."""
    auditor = make_auditor(settings)
    try:
        yield auditor
    finally:
        auditor.close()


EXTENSION = "mprtm.audit"


def init_app(app: Any, settings: Settings) -> Auditor:
    """Attach the auditor of ``settings`` to a Flask app and serve ``GET /metrics``."""
    from flask import Response

    auditor = make_auditor(settings)
    app.extensions[EXTENSION] = auditor

    @app.get("/metrics")
    def metrics() -> Response:
        from flask import abort, request
        from prometheus_client import generate_latest

        from cds.metrics import client_allowed, registry_for

        if not client_allowed(request.remote_addr, settings.server.metrics_allow):
            abort(403)
        engine = app.extensions.get("mprtm.engine")
        text = auditor.metrics_text()
        if engine is not None:
            if "mprtm.metrics" not in app.extensions:
                app.extensions["mprtm.metrics"] = registry_for(engine)
            text += generate_latest(app.extensions["mprtm.metrics"]).decode()
        return Response(text, mimetype="text/plain; version=0.0.4")

    return auditor


def audit(event: dict[str, Any]) -> None:
    """Record ``event`` with the current Flask app's auditor (none attached: nothing)."""
    from flask import current_app

    auditor = current_app.extensions.get(EXTENSION)
    if auditor is not None:
        auditor.record(event)
