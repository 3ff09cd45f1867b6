"""Start a real Orthanc PACS (Debian package ``orthanc`` + ``orthanc-dicomweb``) for tests.

Orthanc runs as a subprocess with a JSON configuration generated into a temporary
directory: DICOM and HTTP on free ports of 127.0.0.1 only, remote access off, HTTP basic
authentication on, the DICOMweb plugin loaded, storage and index inside that directory.
The benchmark (``benchmarks/bench_pacs.py``) starts its Orthanc with the same class.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Where the Debian packages put the server and the DICOMweb plugin.
ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (Linux prctl
    PR_SET_PDEATHSIG), so a killed pytest never leaves an Orthanc behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed, or did not start in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_orthanc() -> tuple[str, str]:
    """Paths of the Orthanc binary and of the DICOMweb plugin.

    Raises:
        OrthancUnavailable: when either is missing (install the apt packages).
    """
    binary = next((p for p in ORTHANC_BINARIES if os.access(p, os.X_OK)), None)
    binary = binary or shutil.which("Orthanc")
    plugin = next((p for p in DICOMWEB_PLUGINS if os.path.exists(p)), None)
    if not binary or not plugin:
        raise OrthancUnavailable(
            "Orthanc with its DICOMweb plugin is not installed: "
            "apt-get install orthanc orthanc-dicomweb (see .ci/apt-packages.txt)"
        )
    return binary, plugin


@dataclass
class OrthancServer:
    """One Orthanc process and how to reach it.

    Args:
        workdir: empty directory for the configuration, storage, index and log.
        aet: Orthanc's own AE title.
        modalities: AE title -> (host, port) of peers Orthanc knows (C-MOVE targets;
            also the only AEs allowed to query and retrieve).
        username: HTTP basic-auth user (password in ``password``).
        password: HTTP basic-auth password.
        extra: more configuration keys, merged over the generated ones.
        tcp_nodelay: start Orthanc with ``TCP_NODELAY=1``, which makes DCMTK (Orthanc's
            DICOM stack) turn Nagle's algorithm off; with it on, every DIMSE exchange
            waits ~40 ms for a delayed ACK.
    """

    workdir: Path
    aet: str = "ORTHANC"
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)
    username: str = "mprtm"
    password: str = "test-only-password"
    extra: dict[str, object] = field(default_factory=dict)
    tcp_nodelay: bool = True
    dicom_port: int = 0
    http_port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    @property
    def log_file(self) -> Path:
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, object]:
        """The JSON configuration written for this instance."""
        _, plugin = find_orthanc()
        cfg: dict[str, object] = {
            "Name": "mprtm-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "Plugins": [plugin],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {
                aet.lower(): [aet, host, port] for aet, (host, port) in self.modalities.items()
            },
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "SynchronousCMove": True,
            "SaveJobs": False,
            "StableAge": 60,
            "DeidentifyLogs": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        cfg.update(self.extra)
        return cfg

    def start(self, timeout_s: float = 30.0) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until HTTP and DICOM answer."""
        binary, _ = find_orthanc()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            [binary, str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env={**os.environ, "TCP_NODELAY": "1" if self.tcp_nodelay else "0"},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise OrthancUnavailable(
                    f"Orthanc exited with {self._proc.returncode}; log: {self.log_file}"
                )
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise OrthancUnavailable(
            f"Orthanc did not answer within {timeout_s} s; log: {self.log_file}"
        )

    def _ready(self) -> bool:
        try:
            r = httpx.get(f"{self.http_url}/system", auth=self.auth, timeout=1.0)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1.0),
        ):
            return True
        return False

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections open but nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """Ask Orthanc to stop (SIGTERM) without waiting; :meth:`stop` waits."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()

    def stop(self) -> None:
        """Terminate Orthanc (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rest(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One call to Orthanc's own REST API (test set-up and checks)."""
        return httpx.request(
            method,
            f"{self.http_url}{path}",
            auth=self.auth,
            timeout=30.0,
            **kwargs,  # type: ignore[arg-type]
        )

    def statistics(self) -> dict[str, object]:
        """Orthanc's ``/statistics`` (counts of patients, studies, series, instances)."""
        r = self.rest("GET", "/statistics")
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data
