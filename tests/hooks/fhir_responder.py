"""An in-process FHIR responder for the CDS Hooks fallback tests.

IT IS A FAKE, used because it can observe what the service asks for (which keys were
fetched, with which bearer token) and inject delays.  It follows the FHIR R4 RESTful API
only as far as these tests need: ``GET [base]/Patient/[id]`` (read; 404 when unknown) and
``GET [base]/[type]?patient=[id]...`` (search) answering a ``searchset`` Bundle of the
stored resources of that type whose ``subject`` is the patient; other search parameters
are ignored.  Requests without ``Authorization: Bearer <token>`` get 401.  The real FHIR
engine is used by the test that follows it (tests/hooks/test_fhir_fallback.py).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FhirResponder:
    """Serves ``resources`` on 127.0.0.1; records every request.

    Args:
        token: the only bearer token accepted.
        delay_s: seconds each answer waits (time-budget tests).
    """

    def __init__(self, token: str, delay_s: float = 0.0) -> None:
        self.token = token
        self.delay_s = delay_s
        self.resources: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # silence
                return

            def do_GET(self) -> None:  # noqa: N802
                responder._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization")
        with self._lock:
            self.requests.append((h.path, auth))
        if self.delay_s:
            time.sleep(self.delay_s)
        if auth != f"Bearer {self.token}":
            self._send(h, 401, {"resourceType": "OperationOutcome", "issue": []})
            return
        parts = urlsplit(h.path)
        path = parts.path.removeprefix("/fhir/").strip("/")
        segments = path.split("/")
        if len(segments) == 2:
            rtype, rid = segments
            for r in self.resources:
                if r.get("resourceType") == rtype and r.get("id") == rid:
                    self._send(h, 200, r)
                    return
            self._send(h, 404, {"resourceType": "OperationOutcome", "issue": []})
            return
        rtype = segments[0]
        patient = (parse_qs(parts.query).get("patient") or [""])[0]
        hits = [
            r
            for r in self.resources
            if r.get("resourceType") == rtype
            and (r.get("subject") or {}).get("reference") == f"Patient/{patient}"
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(hits),
            "entry": [{"resource": r} for r in hits],
        }
        self._send(h, 200, bundle)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
