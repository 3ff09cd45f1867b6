"""``cds.sources.make_imaging_source``: settings become a working source or a ConfigError
naming the key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cds.config import Settings
from cds.errors import ConfigError
from cds.sources import make_imaging_source
from connectors.pacs.dicomweb import DicomWebSource
from connectors.pacs.dimse import DimseSource
from tests.pacs.pacs_env import OUR_AET, PATIENTS, Pacs

pytestmark = pytest.mark.orthanc


def _settings(pacs: Pacs, tmp_path: Path, **pacs_keys: object) -> Settings:
    base: dict[str, object] = {
        "pacs__host": "127.0.0.1",
        "pacs__port": pacs.server.dicom_port,
        "pacs__called_aet": pacs.server.aet,
        "pacs__calling_aet": OUR_AET,
        "pacs__storage_port": pacs.move_port,
        "pacs__allowed_peers": [pacs.server.aet],
        "pacs__cache_dir": str(tmp_path / "cache"),
        "pacs__max_retries": 0,
    }
    base.update({f"pacs__{k}": v for k, v in pacs_keys.items()})
    return Settings().replace(**base)


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_dimse_from_settings(pacs: Pacs, tmp_path: Path, retrieve: str) -> None:
    source = make_imaging_source(_settings(pacs, tmp_path, source="dimse", retrieve=retrieve))
    assert isinstance(source, DimseSource)
    try:
        refs = source.find_series(PATIENTS[0])
        lge = next(r for r in refs if r.series_description == "LGE PSIR SAX")
        assert len(source.retrieve_series(lge)) == lge.n_instances
    finally:
        source.close()
    if retrieve == "move":  # the SCP stopped with the source: nobody listens any more
        assert source.scp is not None and not source.scp.running
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", pacs.move_port))
            s.listen()


def test_dicomweb_from_settings(pacs: Pacs, tmp_path: Path) -> None:
    settings = _settings(
        pacs,
        tmp_path,
        source="dicomweb",
        dicomweb_url=pacs.server.dicomweb_url,
        dicomweb_auth="basic",
        dicomweb_username=pacs.server.username,
        dicomweb_password=pacs.server.password,
    )
    source = make_imaging_source(settings)
    assert isinstance(source, DicomWebSource)
    try:
        assert len(source.find_series(PATIENTS[1])) == 3
    finally:
        source.close()


def test_bad_settings_name_the_key(pacs: Pacs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pacs.dicomweb_url"):
        make_imaging_source(_settings(pacs, tmp_path, source="dicomweb"))
    with pytest.raises(ConfigError, match="MPRTM_PACS__DICOMWEB_TOKEN"):
        make_imaging_source(
            _settings(
                pacs,
                tmp_path,
                source="dicomweb",
                dicomweb_url="http://x/dw",
                dicomweb_auth="bearer",
            )
        )
    with pytest.raises(ConfigError, match="pacs.calling_aet"):
        make_imaging_source(_settings(pacs, tmp_path, source="dimse", calling_aet="X" * 17))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="pacs.storage_port"):
            make_imaging_source(
                _settings(pacs, tmp_path, source="dimse", retrieve="move", storage_port=port)
            )
