"""Start and drive the test FHIR engine (tests/servers/fhir/server.mjs) from pytest.

The engine is real (Medplum's FHIR router over its in-memory repository, with R4
validation); the control calls here (fault injection, auth configuration, statistics) talk
to the wrapper's ``/__test__`` endpoints, which exist only in this test server.

Use the session fixture from any test area's conftest::

    from tests.servers.fhir_engine import fhir_engine  # noqa: F401  (pytest fixture)

or start one yourself with :func:`start_engine` (a context manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ENGINE_DIR = Path(__file__).resolve().parent / "fhir"
READY_PREFIX = "FHIR engine ready at "


class EngineStartError(RuntimeError):
    """The Node FHIR engine could not be started (Node or its npm packages missing, crash)."""


@dataclass
class FhirEngine:
    """A running engine: its FHIR base URL and helpers for the test-only control endpoints.

    Args:
        base_url: FHIR base, e.g. ``http://127.0.0.1:41234/fhir``.
        process: the Node process (owned by whoever started it).
    """

    base_url: str
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        return self.base_url.rsplit("/fhir", 1)[0]

    @property
    def token_url(self) -> str:
        return self.root + "/auth/token"

    def _control(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.root}/__test__/{name}"
        resp = httpx.post(url, json=body or {}) if body is not None else httpx.get(url)
        resp.raise_for_status()
        return dict(resp.json())

    def inject_fault(
        self,
        status: int | None = 500,
        *,
        count: int = 1,
        retry_after: float | str | None = None,
        hang_ms: int = 0,
        path_contains: str = "",
        method: str = "",
    ) -> None:
        """Make the next ``count`` matching requests fail: answer ``status`` (with
        ``Retry-After`` when given) after ``hang_ms``; ``status=None`` with ``hang_ms``
        hangs and then answers normally."""
        self._control(
            "faults",
            {
                "status": status or 0,
                "count": count,
                "retry_after": retry_after,
                "hang_ms": hang_ms,
                "path_contains": path_contains,
                "method": method,
            },
        )

    def configure_auth(
        self,
        *,
        require: bool,
        tokens: Sequence[str] = (),
        clients: dict[str, dict[str, Any]] | None = None,
        token_ttl: int | None = None,
        well_known: bool = True,
    ) -> None:
        """Turn bearer checking on/off; ``clients`` maps client_id -> {"jwks": {...}} or
        {"jwks_url": "..."} for the SMART Backend Services token endpoint."""
        body: dict[str, Any] = {"require": require, "tokens": list(tokens)}
        body["clients"] = clients or {}
        body["well_known"] = well_known
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        self._control("auth", body)

    def stats(self) -> dict[str, Any]:
        return self._control("stats")

    def reset(self, *, data: bool = False) -> None:
        """Clear faults and statistics (and every resource with ``data=True``)."""
        self._control("reset", {"data": data})

    def store_unvalidated(self, resource: dict[str, Any]) -> None:
        """Store a resource bypassing validation (malformed data as real EHRs hold)."""
        self._control("raw", {"resource": resource})

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction/batch Bundle (test data set-up); raises unless 200."""
        resp = httpx.post(
            self.base_url,
            json=bundle,
            timeout=120,
            headers={"Content-Type": "application/fhir+json"},
        )
        if resp.status_code != 200:
            raise AssertionError(f"loading a Bundle failed: {resp.text[:2000]}")
        return dict(resp.json())

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT one resource (test data set-up); raises on a non-2xx answer."""
        url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
        resp = httpx.put(url, json=resource, headers={"Content-Type": "application/fhir+json"})
        if resp.status_code >= 300:
            raise AssertionError(f"PUT {resource['resourceType']}/{resource['id']}: {resp.text}")
        return dict(resp.json())


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise EngineStartError("node is not installed (.ci/setup.d/20-fhir-engine.sh installs it)")
    return [node, "--experimental-websocket", str(ENGINE_DIR / "server.mjs")]


@contextlib.contextmanager
def start_engine(args: Sequence[str] = (), *, timeout_s: float = 90.0) -> Iterator[FhirEngine]:
    """Start an engine on a free localhost port, yield it, and stop it afterwards."""
    if not (ENGINE_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise EngineStartError(
            f"{ENGINE_DIR}/node_modules is missing: run .ci/setup.d/20-fhir-engine.sh"
        )
    cmd = [*node_command(), "--port", "0", *args]
    proc = subprocess.Popen(  # noqa: S603 (fixed command)
        cmd,
        cwd=ENGINE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        base = _wait_ready(proc, timeout_s)
        yield FhirEngine(base_url=base, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith(READY_PREFIX):
            sel.close()
            # Drain further output in the background so the pipe never fills up.
            _drain(proc)
            return line[len(READY_PREFIX) :].strip()
    sel.close()
    tail = "\n".join(seen[-20:])
    raise EngineStartError(f"FHIR engine did not become ready within {timeout_s:.0f}s:\n{tail}")


def _drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def run() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for _ in proc.stdout:
                pass

    threading.Thread(target=run, name="fhir-engine-drain", daemon=True).start()


@pytest.fixture(scope="session")
def fhir_engine() -> Iterator[FhirEngine]:
    """One test FHIR engine for the session (free localhost port; stopped afterwards)."""
    try:
        with start_engine() as engine:
            yield engine
    except EngineStartError as exc:
        pytest.fail(str(exc))


def load_json_lines(path: Path) -> list[dict[str, Any]]:
    """The resources of one NDJSON file."""
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
