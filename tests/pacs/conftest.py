"""Fixtures of the PACS tests: a real Orthanc (apt packages ``orthanc`` and
``orthanc-dicomweb``) started per session on free 127.0.0.1 ports and loaded with small
MR test series by ``mprtm load-dicom``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cds.cli import main as cli_main
from connectors.pacs._scp import StorageScp
from connectors.pacs.cache import SeriesCache
from connectors.pacs.dicomweb import DicomWebSource
from connectors.pacs.dimse import DimseSource
from connectors.pacs.factory import NetworkSourceParams, Peer, make_peer
from tests.pacs.dicom_data import WrittenSeries, write_patient
from tests.pacs.orthanc_server import OrthancServer, OrthancUnavailable, find_orthanc, free_port

#: pynetdicom 3.0.4 leaks the socket of a refused TCP connect (its ``_shutdown_socket``
#: skips ``close()`` when ``shutdown()`` fails; pydicom/pynetdicom#979, fixed upstream by
#: PR #999 after 3.0.4).  Tests that connect to a closed port ignore that one warning.
IGNORE_PYNETDICOM_SOCKET_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*socket.socket:pytest.PytestUnraisableExceptionWarning"
)

#: Our AE title, as registered in Orthanc's DicomModalities (the C-MOVE destination).
OUR_AET = "MPRTM"
PATIENTS = ("PACS-P001", "PACS-P002")


@dataclass
class Pacs:
    """The session's Orthanc, what was loaded into it, and the C-MOVE port it knows us by."""

    server: OrthancServer
    move_port: int
    series: list[WrittenSeries]

    def series_of(self, patient_id: str) -> list[WrittenSeries]:
        return [s for s in self.series if s.patient_id == patient_id]

    def by_uid(self, uid: str) -> WrittenSeries:
        return next(s for s in self.series if s.series_instance_uid == uid)

    def params(self, cache_dir: Path, **over: object) -> NetworkSourceParams:
        values: dict[str, object] = {
            "kind": "dimse",
            "cache_dir": str(cache_dir),
            "host": "127.0.0.1",
            "port": self.server.dicom_port,
            "called_aet": self.server.aet,
            "calling_aet": OUR_AET,
            "storage_port": self.move_port,
            "allowed_peers": (self.server.aet,),
            "assoc_timeout_s": 5.0,
            "dimse_timeout_s": 10.0,
            "network_timeout_s": 10.0,
            "max_retries": 2,
            "retry_backoff_s": 0.05,
            "dicomweb_url": self.server.dicomweb_url,
            "dicomweb_auth": "basic",
            "dicomweb_username": self.server.username,
            "dicomweb_password": self.server.password,
            "dicomweb_timeout_s": 10.0,
        }
        values.update(over)
        return NetworkSourceParams(**values)  # type: ignore[arg-type]

    def peer(self, **over: object) -> Peer:
        return make_peer(self.params(Path("unused"), **over))

    def dimse(self, cache_dir: Path, *, retrieve: str = "get", **over: object) -> DimseSource:
        p = self.params(cache_dir, retrieve=retrieve, **over)
        scp = None
        if retrieve == "move":
            scp = StorageScp(OUR_AET, p.storage_port, allowed_peers=p.allowed_peers)
        return DimseSource(make_peer(p), SeriesCache(cache_dir), retrieve=p.retrieve, scp=scp)

    def dicomweb(self, cache_dir: Path, **over: object) -> DicomWebSource:
        s = self.server
        kw: dict[str, object] = {
            "auth": "basic",
            "username": s.username,
            "password": s.password,
            "timeout_s": 10.0,
        }
        kw.update(over)
        return DicomWebSource(s.dicomweb_url, SeriesCache(cache_dir), **kw)  # type: ignore[arg-type]


def _require_orthanc() -> None:
    try:
        find_orthanc()
    except OrthancUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def start_orthanc(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., OrthancServer]]:
    """Start extra Orthanc instances (each stopped at the end of the session)."""
    _require_orthanc()
    started: list[OrthancServer] = []

    def start(**kw: object) -> OrthancServer:
        server = OrthancServer(tmp_path_factory.mktemp("orthanc"), **kw)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def pacs(
    start_orthanc: Callable[..., OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> Pacs:
    """Orthanc loaded with two patients x three MR series by ``mprtm load-dicom``."""
    move_port = free_port()
    server = start_orthanc(modalities={OUR_AET: ("127.0.0.1", move_port)})
    data = tmp_path_factory.mktemp("dicom")
    series: list[WrittenSeries] = []
    for k, pid in enumerate(PATIENTS):
        series += write_patient(data, pid, seed=k + 1)
    rc = cli_main(
        [
            "load-dicom",
            str(data),
            "--pacs",
            f"127.0.0.1:{server.dicom_port}",
            "--called-aet",
            server.aet,
            "--calling-aet",
            "LOADER",
            "--no-progress",
        ]
    )
    assert rc == 0, "load-dicom failed while loading the test PACS"
    return Pacs(server=server, move_port=move_port, series=series)
