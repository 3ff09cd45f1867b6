"""A FHIR Bulk Data Access test server that follows the HL7 Bulk Data Access IG (v2).

TEST SERVER ONLY.  The FHIR engine available here (Medplum's router) has no ``$export``,
so this small server implements the asynchronous request pattern of the IG over a folder
of NDJSON files (``<Type>.ndjson``), for testing the client in ``connectors/fhir/bulk.py``:

* kick-off: ``GET [base]/Patient/$export`` and ``GET [base]/Group/[id]/$export`` (and the
  system-level ``[base]/$export``) with ``Accept: application/fhir+json`` and
  ``Prefer: respond-async``; parameters ``_outputFormat`` (ndjson), ``_type`` and
  ``_since``; answers ``202 Accepted`` with ``Content-Location`` (the status URL), or
  ``400`` with an OperationOutcome;
* status: ``GET <status URL>`` answers ``202`` with ``X-Progress`` and ``Retry-After`` while
  the job "runs" (``polls_before_done`` polls), ``429`` with ``Retry-After`` when polled
  sooner than it asked, then ``200`` with the JSON manifest (``transactionTime``,
  ``request``, ``requiresAccessToken``, ``output``, ``error``); ``DELETE`` cancels (202);
* output files: ``GET [base]/bulkfiles/<job>/<name>`` as ``application/fhir+ndjson``; lines
  of the source folder that are not JSON or lack ``resourceType``/``id`` are reported in
  an ``OperationOutcome`` NDJSON error file instead of being exported;
* ``GET [base]/metadata``: a CapabilityStatement that instantiates the IG's bulk-data one;
* optional bearer token check (``token``): kick-off, status and files need it and the
  manifest says ``requiresAccessToken: true``;
* optional file host (``file_base_url``): the manifest points its files at another server
  (a second :class:`BulkTestServer` sharing ``jobs``), as servers that keep export files
  on a separate host do; :attr:`BulkTestServer.auth_seen` records which requests carried
  an ``Authorization`` header;
* optional ``deleted`` references: the manifest's ``deleted`` array then names an NDJSON
  file with one Bundle whose entries are ``DELETE`` requests (Bulk Data IG 2.0);
* optional ``status_error``: the status URL answers that HTTP status with an
  OperationOutcome of the given issue code (``times`` times, then as usual).

Group export takes the Group's ``member`` patients (from ``Group.ndjson``); Patient and
Group exports include the Patient resources and every resource whose ``subject`` or
``patient`` references one of those patients.  ``_since`` keeps resources whose
``meta.lastUpdated`` is at or after it (resources without one count as updated now).

Run alone: ``python tests/servers/bulk/server.py FOLDER [--port N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NDJSON = "application/fhir+ndjson"
FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
PATIENT_REFS = ("subject", "patient")
CAPABILITIES = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "date": "2026-01-01",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
    "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
    "rest": [
        {
            "mode": "server",
            "operation": [
                {
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                },
                {
                    "name": "patient-export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                },
                {
                    "name": "group-export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
                },
            ],
        }
    ],
}


@dataclass
class Job:
    """One export request and its prepared output."""

    id: str
    request_url: str
    files: dict[str, bytes] = field(default_factory=dict)  # name -> NDJSON content
    outputs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    next_poll_at: float = 0.0
    transaction_time: str = ""
    cancelled: bool = False


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_instant(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class BulkTestServer:
    """The server; start with :meth:`start` (a thread on a free localhost port).

    Args:
        folder: NDJSON folder to export from.
        polls_before_done: status polls answered 202 before the manifest.
        retry_after: seconds sent in ``Retry-After`` on 202 status answers.
        token: when set, requests must carry ``Authorization: Bearer <token>``.
        part_size: resources per output file (several files per type when exceeded).
    """

    def __init__(
        self,
        folder: Path,
        *,
        polls_before_done: int = 2,
        retry_after: float = 1,
        token: str = "",
        part_size: int = 10_000,
    ) -> None:
        self.folder = Path(folder)
        self.polls_before_done = polls_before_done
        self.retry_after = retry_after
        self.token = token
        self.part_size = part_size
        self.jobs: dict[str, Job] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.auth_seen: list[tuple[str, bool]] = []  # (path, Authorization header sent)
        self.file_base_url = ""
        self.deleted: list[str] = []
        self.status_error: tuple[int, str, int] | None = None  # (status, issue code, times)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/fhir"

    def start(self, port: int = 0) -> BulkTestServer:
        server = self

        class Handler(_Handler):
            bulk = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -------------------------------------------------------------- export
    def _read_folder(self) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
        by_type: dict[str, list[dict[str, Any]]] = {}
        problems: list[str] = []
        for path in sorted(self.folder.glob("*.ndjson")):
            for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    problems.append(f"{path.name} line {n}: not JSON")
                    continue
                if not isinstance(res, dict) or not res.get("resourceType") or not res.get("id"):
                    problems.append(f"{path.name} line {n}: resourceType or id missing")
                    continue
                by_type.setdefault(str(res["resourceType"]), []).append(res)
        return by_type, problems

    def prepare(self, job: Job, level: str, group_id: str, types: list[str], since: str) -> None:
        by_type, problems = self._read_folder()
        patients: set[str] | None = None
        if level == "group":
            group = next((g for g in by_type.get("Group", []) if g["id"] == group_id), None)
            if group is None:
                raise LookupError(f"Group/{group_id} not found")
            patients = set()
            for m in group.get("member") or []:
                ref = str((m.get("entity") or {}).get("reference", ""))
                if ref.startswith("Patient/"):
                    patients.add(ref.split("/", 1)[1])
        since_t = _parse_instant(since) if since else None
        now = dt.datetime.now(dt.UTC)

        def keep(res: dict[str, Any]) -> bool:
            if since_t is not None:
                updated = (res.get("meta") or {}).get("lastUpdated")
                if (_parse_instant(updated) if updated else now) < since_t:
                    return False
            if level == "system":
                return True
            if res["resourceType"] == "Patient":
                return patients is None or res["id"] in patients
            for key in PATIENT_REFS:
                ref = str((res.get(key) or {}).get("reference", ""))
                if ref.startswith("Patient/"):
                    return patients is None or ref.split("/", 1)[1] in patients
            return False

        for rtype in sorted(by_type):
            if types and rtype not in types:
                continue
            kept = [r for r in by_type[rtype] if keep(r)]
            for part in range(0, len(kept), self.part_size):
                chunk = kept[part : part + self.part_size]
                name = f"{rtype}.{part // self.part_size + 1:03d}.ndjson"
                job.files[name] = "".join(json.dumps(r) + "\n" for r in chunk).encode()
                job.outputs.append(
                    {"type": rtype, "url": f"bulkfiles/{job.id}/{name}", "count": len(chunk)}
                )
        if problems:
            lines = [
                json.dumps(
                    {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "invalid", "diagnostics": p}],
                    }
                )
                for p in problems
            ]
            job.files["errors.ndjson"] = ("\n".join(lines) + "\n").encode()
            job.errors.append(
                {"type": "OperationOutcome", "url": f"bulkfiles/{job.id}/errors.ndjson"}
            )
        if self.deleted:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in self.deleted],
            }
            job.files["deleted.ndjson"] = (json.dumps(bundle) + "\n").encode()
        job.transaction_time = _iso_now()


class _Handler(BaseHTTPRequestHandler):
    bulk: BulkTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        return

    def _send(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ctype: str = "application/fhir+json",
    ) -> None:
        self.bulk.log.append((self.command, self.path, status))
        data = (
            b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _outcome(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(
            status,
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
            },
            headers,
        )

    def _authorized(self) -> bool:
        if not self.bulk.token:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {self.bulk.token}"

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        url = urlsplit(self.path)
        path = url.path.removeprefix("/fhir").strip("/")
        self.bulk.auth_seen.append((path, "Authorization" in self.headers))
        if not self._authorized():
            return self._outcome(401, "bearer token required")
        if path == "metadata":
            return self._send(200, CAPABILITIES)
        if path.startswith("bulkfiles/"):
            return self._file(path)
        if path.startswith("bulkstatus/"):
            return self._status(path.split("/", 1)[1])
        if path.endswith("$export"):
            return self._kickoff(path, parse_qs(url.query))
        return self._outcome(404, f"no route {path}")

    def do_DELETE(self) -> None:  # noqa: N802 (stdlib name)
        path = urlsplit(self.path).path.removeprefix("/fhir").strip("/")
        job = self.bulk.jobs.get(path.split("/", 1)[-1]) if path.startswith("bulkstatus/") else None
        if job is None:
            return self._outcome(404, "no such export job")
        job.cancelled = True
        self.bulk.jobs.pop(job.id, None)
        return self._send(202)

    def _kickoff(self, path: str, query: dict[str, list[str]]) -> None:
        if "respond-async" not in self.headers.get("Prefer", ""):
            return self._outcome(400, "Prefer: respond-async is required")
        if "application/fhir+json" not in self.headers.get("Accept", ""):
            return self._outcome(400, "Accept: application/fhir+json is required")
        fmt = query.get("_outputFormat", [NDJSON])[0]
        if fmt not in FORMATS:
            return self._outcome(400, f"_outputFormat {fmt} is not supported")
        types = [t for v in query.get("_type", []) for t in v.split(",") if t]
        since = query.get("_since", [""])[0]
        if since:
            try:
                _parse_instant(since)
            except ValueError:
                return self._outcome(400, "_since is not a FHIR instant")
        parts = path.split("/")
        if parts == ["Patient", "$export"]:
            level, gid = "patient", ""
        elif len(parts) == 3 and parts[0] == "Group" and parts[2] == "$export":
            level, gid = "group", parts[1]
        elif parts == ["$export"]:
            level, gid = "system", ""
        else:
            return self._outcome(404, f"no export at {path}")
        job = Job(id=uuid.uuid4().hex, request_url=f"{self.bulk.base_url}/{self.path[6:]}")
        try:
            self.bulk.prepare(job, level, gid, types, since)
        except LookupError as exc:
            return self._outcome(404, str(exc))
        self.bulk.jobs[job.id] = job
        job.next_poll_at = time.monotonic()
        status_url = f"{self.bulk.base_url}/bulkstatus/{job.id}"
        return self._send(202, None, {"Content-Location": status_url})

    def _status(self, job_id: str) -> None:
        job = self.bulk.jobs.get(job_id)
        if job is None:
            return self._outcome(404, "no such export job (finished, cancelled or unknown)")
        if self.bulk.status_error is not None and self.bulk.status_error[2] > 0:
            status, code, times = self.bulk.status_error
            self.bulk.status_error = (status, code, times - 1)
            return self._send(
                status,
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": code, "diagnostics": f"{code} test"}],
                },
            )
        now = time.monotonic()
        if now < job.next_poll_at - 0.05:
            wait = max(1, round(job.next_poll_at - now))
            return self._outcome(429, "polled too often", {"Retry-After": str(wait)})
        if job.polls < self.bulk.polls_before_done:
            job.polls += 1
            job.next_poll_at = now + self.bulk.retry_after
            pct = int(100 * job.polls / (self.bulk.polls_before_done + 1))
            return self._send(
                202,
                None,
                {"X-Progress": f"{pct}% done", "Retry-After": f"{self.bulk.retry_after:g}"},
            )
        base = self.bulk.file_base_url or self.bulk.base_url
        manifest: dict[str, Any] = {
            "transactionTime": job.transaction_time,
            "request": job.request_url,
            "requiresAccessToken": bool(self.bulk.token),
            "output": [{**o, "url": f"{base}/{o['url']}"} for o in job.outputs],
            "error": [{**e, "url": f"{base}/{e['url']}"} for e in job.errors],
        }
        if "deleted.ndjson" in job.files:
            url = f"{base}/bulkfiles/{job.id}/deleted.ndjson"
            manifest["deleted"] = [{"type": "Bundle", "url": url}]
        return self._send(200, manifest, ctype="application/json")

    def _file(self, path: str) -> None:
        _, job_id, name = (path.split("/", 2) + ["", ""])[:3]
        job = self.bulk.jobs.get(job_id)
        if job is None or name not in job.files:
            return self._outcome(404, "no such file")
        return self._send(200, job.files[name], ctype=NDJSON)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--polls", type=int, default=2)
    parser.add_argument("--retry-after", type=float, default=1)
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    server = BulkTestServer(
        args.folder, polls_before_done=args.polls, retry_after=args.retry_after, token=args.token
    ).start(args.port)
    print(f"Bulk Data test server ready at {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
