"""Run ``mprtm serve`` (waitress) in a subprocess on a free localhost port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path,
    db_url: str,
    *,
    port: int,
    require_jwt: bool,
    jwks_file: str = "",
    iss: str = "",
    extra: str = "",
) -> Path:
    issuers = ""
    if iss:
        issuers = f'[[cds_hooks.trusted_issuers]]\niss = "{iss}"\njwks_file = "{jwks_file}"\n'
    path.write_text(
        f"""
[database]
url = "{db_url}"

[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
threads = 8

[cds_hooks]
base_url = "http://127.0.0.1:{port}"
require_jwt = {str(require_jwt).lower()}
{extra}

{issuers}
""",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def serve(config: Path, port: int, timeout_s: float = 60.0) -> Iterator[str]:
    """Start the server (its log goes to ``<config>.log``), wait for ``/healthz``, yield
    its base URL, stop it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log_path = config.with_suffix(".log")
    log_file = log_path.open("w", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds.cli", "--config", str(config), "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log_file.flush()
                raise RuntimeError(f"mprtm serve exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mprtm serve did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
