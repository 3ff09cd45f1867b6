"""Fixtures of the PACS tests: a real Orthanc (apt packages ``orthanc`` and
``orthanc-dicomweb``) started per session on free 127.0.0.1 ports and loaded with small
MR test series by ``mprtm load-dicom``."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from cds.cli import main as cli_main
from tests.pacs.dicom_data import WrittenSeries, write_patient
from tests.pacs.orthanc_server import OrthancServer, OrthancUnavailable, find_orthanc, free_port
from tests.pacs.pacs_env import OUR_AET, PATIENTS, Pacs


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    """pynetdicom 3.0.4 leaves some sockets to the garbage collector (pynetdicom#979).
    Collect them as each PACS test ends, so the ResourceWarning surfaces in the test that
    caused it (where IGNORE_PYNETDICOM_SOCKET_LEAK applies), never in a later test."""
    yield
    gc.collect()


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
    for server in started:  # all at once: each takes ~3 s to shut down
        server.terminate()
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
