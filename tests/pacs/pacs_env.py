"""What the PACS tests share: the :class:`Pacs` handle on the session's Orthanc, our AE
title, the test patients, and helpers that build sources pointed at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.pacs._scp import StorageScp
from connectors.pacs.cache import SeriesCache
from connectors.pacs.dicomweb import DicomWebSource
from connectors.pacs.dimse import DimseSource
from connectors.pacs.factory import NetworkSourceParams, Peer, make_peer
from tests.pacs.dicom_data import WrittenSeries
from tests.pacs.orthanc_server import OrthancServer

#: pynetdicom 3.0.4 leaks the socket of a refused TCP connect (its ``_shutdown_socket``
#: skips ``close()`` when ``shutdown()`` fails; pydicom/pynetdicom#979, fixed upstream by
#: PR #999 after 3.0.4).  Tests that connect to a closed port ignore that one warning.
IGNORE_PYNETDICOM_SOCKET_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*(socket.socket|ssl.SSLSocket):"
    "pytest.PytestUnraisableExceptionWarning"
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
