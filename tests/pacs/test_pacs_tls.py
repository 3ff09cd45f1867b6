"""DICOM over TLS against an Orthanc with DICOM TLS on and client certificates required:
C-ECHO, C-FIND, C-GET and C-MOVE (Orthanc -> our Storage SCP over TLS) work with the
right certificates; plain TCP, an untrusted CA and a missing client certificate end in
AssociationError."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cds.cli import main as cli_main
from connectors.errors import AssociationError
from connectors.pacs.dimse import DimseSource
from connectors.pacs.factory import NetworkSourceParams, open_network_source
from tests.pacs.dicom_data import write_patient
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.pacs.pacs_env import IGNORE_PYNETDICOM_SOCKET_LEAK, OUR_AET
from tests.pacs.tls_certs import Pki, make_pki

# pynetdicom#979 (see pacs_env): with TLS, SSLSocket.shutdown() also fails when the
# peer closed first, so closing a finished TLS association leaks its socket too.
pytestmark = [pytest.mark.orthanc, IGNORE_PYNETDICOM_SOCKET_LEAK]


@dataclass
class TlsPacs:
    server: OrthancServer
    pki: Pki
    move_port: int

    def params(self, cache: Path, **over: object) -> NetworkSourceParams:
        values: dict[str, object] = {
            "kind": "dimse",
            "cache_dir": str(cache),
            "port": self.server.dicom_port,
            "called_aet": self.server.aet,
            "calling_aet": OUR_AET,
            "storage_port": self.move_port,
            "allowed_peers": (self.server.aet,),
            "assoc_timeout_s": 5.0,
            "max_retries": 1,
            "retry_backoff_s": 0.01,
            "tls": True,
            "tls_ca_file": str(self.pki.ca),
            "tls_cert_file": str(self.pki.our_cert),
            "tls_key_file": str(self.pki.our_key),
        }
        values.update(over)
        return NetworkSourceParams(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_pacs(
    start_orthanc: Callable[..., OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> TlsPacs:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    move_port = free_port()
    server = start_orthanc(
        extra={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.orthanc_cert),
            "DicomTlsPrivateKey": str(pki.orthanc_key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                "mprtm": {
                    "AET": OUR_AET,
                    "Host": "127.0.0.1",
                    "Port": move_port,
                    "UseDicomTls": True,
                }
            },
        }
    )
    # Load over HTTP (the REST API): the DICOM port speaks TLS only.
    for w in write_patient(tmp_path_factory.mktemp("tls-dicom"), "TLS-P1", seed=21):
        for f in w.files:
            server.rest("POST", "/instances", content=f.read_bytes()).raise_for_status()
    return TlsPacs(server, pki, move_port)


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_find_and_retrieve_over_tls(tls_pacs: TlsPacs, tmp_path: Path, retrieve: str) -> None:
    source = open_network_source(tls_pacs.params(tmp_path, retrieve=retrieve))
    assert isinstance(source, DimseSource)
    try:
        source.echo()
        refs = source.find_series("TLS-P1")
        assert len(refs) == 3
        lge = next(r for r in refs if r.series_description == "LGE PSIR SAX")
        assert len(source.retrieve_series(lge)) == lge.n_instances
    finally:
        source.close()


@pytest.mark.parametrize(
    "over",
    [
        {"tls": False},  # plain DICOM to a TLS port
        {"tls_ca_file": "OTHER"},  # Orthanc's certificate not trusted
        {"tls_cert_file": "", "tls_key_file": ""},  # no client certificate
    ],
    ids=["plain", "untrusted-ca", "no-client-cert"],
)
def test_tls_failures_end_in_association_error(
    tls_pacs: TlsPacs, tmp_path: Path, over: dict[str, object]
) -> None:
    if over.get("tls_ca_file") == "OTHER":
        over = {"tls_ca_file": str(tls_pacs.pki.other_ca)}
    source = open_network_source(tls_pacs.params(tmp_path, **over))
    with pytest.raises(AssociationError) as info:
        source.echo()  # type: ignore[union-attr]
    assert info.value.attempts == 2
    assert f"MPRTM -> ORTHANC@127.0.0.1:{tls_pacs.server.dicom_port}" in str(info.value)


def test_bad_tls_files_are_a_config_error(tls_pacs: TlsPacs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert_file"):
        open_network_source(tls_pacs.params(tmp_path, tls_cert_file=str(tmp_path / "nope")))
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ValueError, match="TLS files cannot be loaded"):
        open_network_source(tls_pacs.params(tmp_path, tls_ca_file=str(bogus)))


def test_load_dicom_over_tls(tls_pacs: TlsPacs, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_patient(folder, "TLS-P2", seed=22)
    cfg = tmp_path / "tls.toml"
    cfg.write_text(
        "[pacs]\ntls = true\n"
        f'tls_ca_file = "{tls_pacs.pki.ca}"\n'
        f'tls_cert_file = "{tls_pacs.pki.our_cert}"\n'
        f'tls_key_file = "{tls_pacs.pki.our_key}"\n'
    )
    rc = cli_main(
        [
            "--config",
            str(cfg),
            "load-dicom",
            str(folder),
            "--pacs",
            f"127.0.0.1:{tls_pacs.server.dicom_port}",
            "--called-aet",
            "ORTHANC",
            "--no-progress",
        ]
    )
    assert rc == 0
    with open_network_source(tls_pacs.params(tmp_path / "c")) as source:  # type: ignore[union-attr]
        assert len(source.find_series("TLS-P2")) == 3
