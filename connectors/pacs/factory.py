"""Turn plain parameters into a network imaging source (DIMSE or DICOMweb).

The application maps its settings onto :class:`NetworkSourceParams` (``cds/sources.py``);
nothing here reads configuration files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from connectors.pacs._assoc import Peer
from connectors.pacs._retry import RetryPolicy
from connectors.pacs._scp import StorageScp
from connectors.pacs._tls import client_context, server_context
from connectors.pacs.cache import SeriesCache
from connectors.pacs.dicomweb import DicomWebSource
from connectors.pacs.dimse import DimseSource

__all__ = ["NetworkSourceParams", "Peer", "RetryPolicy", "make_peer", "open_network_source"]


@dataclass(frozen=True)
class NetworkSourceParams:
    """Everything needed to reach a PACS.

    Args:
        kind: "dimse" or "dicomweb".
        cache_dir: where retrieved series are cached.
        host: PACS host (dimse).
        port: PACS DIMSE port (dimse).
        called_aet: the PACS' AE title (dimse).
        calling_aet: our AE title; also the C-MOVE destination (dimse).
        retrieve: "get" or "move" (dimse).
        storage_port: port of our Storage SCP (dimse, retrieve = "move").
        storage_bind: interface of our Storage SCP.
        allowed_peers: AE titles our Storage SCP accepts.
        assoc_timeout_s: TCP connect + ACSE timeout.
        dimse_timeout_s: wait for one DIMSE message.
        network_timeout_s: idle association timeout.
        max_retries: retries of refused/aborted associations or failed HTTP requests.
        retry_backoff_s: first backoff, doubled each retry.
        dicomweb_url: DICOMweb root (dicomweb).
        dicomweb_auth: "none", "basic" or "bearer".
        dicomweb_username: basic-auth user.
        dicomweb_password: basic-auth password.
        dicomweb_token: bearer token.
        dicomweb_timeout_s: HTTP timeout.
        tls: DICOM over TLS (dimse).
        tls_ca_file: CA(s) to verify the PACS (and, for our SCP, its client certificate).
        tls_cert_file: our certificate (PEM).
        tls_key_file: its private key (PEM).
    """

    kind: Literal["dimse", "dicomweb"]
    cache_dir: str
    host: str = "127.0.0.1"
    port: int = 104
    called_aet: str = "ANY-SCP"
    calling_aet: str = "MPRTM"
    retrieve: Literal["get", "move"] = "get"
    storage_port: int = 11112
    storage_bind: str = "127.0.0.1"
    allowed_peers: tuple[str, ...] = ()
    assoc_timeout_s: float = 30.0
    dimse_timeout_s: float = 120.0
    network_timeout_s: float = 120.0
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    dicomweb_url: str = ""
    dicomweb_auth: Literal["none", "basic", "bearer"] = "none"
    dicomweb_username: str = ""
    dicomweb_password: str = ""
    dicomweb_token: str = ""
    dicomweb_timeout_s: float = 60.0
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return (
            f"NetworkSourceParams(kind={self.kind!r}, host={self.host!r}, port={self.port}, "
            f"called_aet={self.called_aet!r}, calling_aet={self.calling_aet!r}, "
            f"dicomweb_url={self.dicomweb_url!r}, cache_dir={self.cache_dir!r})"
        )


def make_peer(p: NetworkSourceParams) -> Peer:
    """The DIMSE peer (PACS address, AE titles, timeouts, retries) of ``p``."""
    return Peer(
        host=p.host,
        port=p.port,
        called_aet=p.called_aet,
        calling_aet=p.calling_aet,
        assoc_timeout_s=p.assoc_timeout_s,
        dimse_timeout_s=p.dimse_timeout_s,
        network_timeout_s=p.network_timeout_s,
        retry=RetryPolicy(max_retries=p.max_retries, backoff_s=p.retry_backoff_s),
        tls=client_context(p.tls_ca_file, p.tls_cert_file, p.tls_key_file) if p.tls else None,
    )


def open_network_source(p: NetworkSourceParams) -> DimseSource | DicomWebSource:
    """A DIMSE or DICOMweb source; a C-MOVE source starts its Storage SCP here.

    Raises:
        ValueError: parameters that cannot work (bad AE title, missing URL, unreadable
            TLS files, ...).
        StorageScpError: our Storage SCP cannot listen on its port.
    """
    cache = SeriesCache(p.cache_dir)
    retry = RetryPolicy(max_retries=p.max_retries, backoff_s=p.retry_backoff_s)
    if p.kind == "dimse":
        scp = None
        if p.retrieve == "move":
            scp = StorageScp(
                p.calling_aet,
                p.storage_port,
                bind_address=p.storage_bind,
                allowed_peers=p.allowed_peers,
                acse_timeout_s=p.assoc_timeout_s,
                network_timeout_s=p.network_timeout_s,
                tls=(
                    server_context(p.tls_cert_file, p.tls_key_file, p.tls_ca_file)
                    if p.tls
                    else None
                ),
            )
        return DimseSource(make_peer(p), cache, retrieve=p.retrieve, scp=scp)
    if p.kind == "dicomweb":
        if not p.dicomweb_url:
            raise ValueError("a DICOMweb source needs its URL")
        return DicomWebSource(
            p.dicomweb_url,
            cache,
            auth=p.dicomweb_auth,
            username=p.dicomweb_username,
            password=p.dicomweb_password,
            token=p.dicomweb_token,
            timeout_s=p.dicomweb_timeout_s,
            retry=retry,
        )
    raise ValueError(f"unknown network imaging source {p.kind!r} (dimse or dicomweb)")
