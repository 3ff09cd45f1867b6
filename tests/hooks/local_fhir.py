"""A minimal FHIR R4 REST stand-in over real HTTP on 127.0.0.1, for the outbound-request tests.

Why not the FHIR engine of ``tests/servers``: these tests need a server that misbehaves on
purpose (drips one byte at a time, sends a body larger than allowed, names a ``next`` page
on another origin) and that records every request's ``Authorization`` header, which the
engine cannot be told to do.  What it does answer follows FHIR R4 "RESTful API":

* ``GET /Patient/<id>``: the Patient resource (read), ``application/fhir+json``;
* ``GET /<Type>?...``: a ``searchset`` Bundle (``type``, ``total``, ``link`` with
  ``relation: self`` and, when set, ``relation: next``), empty unless ``entries`` are set;
* the page a ``next`` link names: the second page of that searchset.

Modes: ``"ok"``; ``"drip"`` (headers, then one byte every ``drip_interval_s`` for a
Content-Length it never reaches); ``"big"`` (a searchset of ``big_bytes``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class LocalFhir:
    """One stand-in server; see the module docstring.

    Args:
        mode: "ok", "drip" or "big".
    """

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.next_url: str | None = None  # absolute URL put in every first page's next link
        self.entries: list[dict[str, Any]] = []
        self.drip_interval_s = 0.5
        self.drip_bytes = 40
        self.big_bytes = 200_000
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.active = 0  # responses being written now
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.requests.append((self.path, self.headers.get("Authorization")))
                    outer.active += 1
                try:
                    outer._answer(self)
                except OSError:
                    pass  # the client closed the connection
                finally:
                    with outer._lock:
                        outer.active -= 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        if self.mode == "drip":
            h.send_response(200)
            h.send_header("Content-Type", "application/fhir+json")
            h.send_header("Content-Length", str(self.drip_bytes * 10))
            h.end_headers()
            for _ in range(self.drip_bytes):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(self.drip_interval_s)
            return
        path = urlsplit(h.path).path
        if path.startswith("/Patient/"):
            body: dict[str, Any] = {"resourceType": "Patient", "id": path.split("/")[2]}
        else:
            body = self._searchset(h.path)
        raw = json.dumps(body).encode()
        if self.mode == "big":
            raw = raw[:-1] + b',"padding":"' + b"x" * self.big_bytes + b'"}'
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _searchset(self, path: str) -> dict[str, Any]:
        links = [{"relation": "self", "url": self.base_url + path}]
        second_page = "page=2" in path
        if self.next_url and not second_page:
            links.append({"relation": "next", "url": self.next_url})
        entries = [] if second_page else self.entries
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "link": links,
            "entry": [{"resource": r} for r in entries],
        }
