"""Our own Storage SCP: the destination of C-MOVE retrievals.

It runs in-process (a pynetdicom server thread), is started and stopped by the DIMSE
source, accepts associations only from the configured peers (calling AE titles) and
only when called by its own AE title, and files each received instance into the
staging area of the series a retrieval is waiting for.  Instances nobody asked for are
refused with a failure status, unless the SCP was given a ``receive`` callback (the
study-arrival listener, ``mprtm listen``), which then files every instance.  Handlers
answer with DIMSE status codes and never raise across the wire.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from connectors.errors import DicomInvalid, StorageScpError
from connectors.pacs._assoc import set_nodelay
from connectors.pacs._contexts import MR_STORAGE_CLASSES, STORAGE_TRANSFER_SYNTAXES, VERIFICATION
from connectors.pacs.cache import StagedSeries

log = logging.getLogger("connectors.pacs.scp")

#: Storage statuses we answer with (PS3.4 Annex B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_UNSOLICITED = 0xC001


class StorageScp:
    """A Storage SCP that receives the instances of C-MOVE retrievals.

    Args:
        ae_title: our AE title (the C-MOVE destination the PACS knows us by).
        port: TCP port to listen on (0 = any free port; see :attr:`port`).
        bind_address: interface to listen on ("0.0.0.0" for every interface).
        allowed_peers: calling AE titles allowed to associate (at least one).
        acse_timeout_s: ACSE timeout of incoming associations.
        network_timeout_s: an idle incoming association is closed after this long.
        tls: a server TLS context (DICOM over TLS), or None for plain TCP.
        receive: called with (SOP Instance UID, encoded instance, dataset) for every
            instance no retrieval waits for; returns the DIMSE status to answer (and may
            raise :class:`DicomInvalid` or ``OSError``).  None: such instances are refused.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        *,
        bind_address: str = "127.0.0.1",
        allowed_peers: Sequence[str],
        acse_timeout_s: float = 30.0,
        network_timeout_s: float = 120.0,
        tls: ssl.SSLContext | None = None,
        receive: Callable[[str, bytes, Dataset], int] | None = None,
    ) -> None:
        peers = [p.strip() for p in allowed_peers if p.strip()]
        if not peers:
            raise ValueError("allowed_peers must name at least one AE title")
        self.ae_title = ae_title
        self.bind_address = bind_address
        self.allowed_peers = tuple(peers)
        self._port = port
        self._acse_timeout_s = acse_timeout_s
        self._network_timeout_s = network_timeout_s
        self._tls = tls
        self._receive = receive
        self._server: ThreadedAssociationServer | None = None
        self._pending: dict[str, StagedSeries] = {}
        self._lock = threading.Lock()
        self.refused_instances = 0

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> StorageScp:
        """Start listening (idempotent).

        Raises:
            StorageScpError: when the address cannot be bound (e.g. port in use).
        """
        if self._server is not None:
            return self
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.allowed_peers)
        ae.acse_timeout = self._acse_timeout_s
        ae.network_timeout = self._network_timeout_s
        ae.add_supported_context(VERIFICATION)
        for uid in MR_STORAGE_CLASSES:
            ae.add_supported_context(uid, STORAGE_TRANSFER_SYNTAXES)
        try:
            self._server = ae.start_server(
                (self.bind_address, self._port),
                block=False,
                ssl_context=self._tls,
                evt_handlers=[
                    (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_CONN_OPEN, set_nodelay),
                ],
            )
        except OSError as exc:
            raise StorageScpError(
                f"storage SCP {self.ae_title} cannot listen on "
                f"{self.bind_address}:{self._port}: {exc.strerror or exc}"
            ) from exc
        log.info(
            "storage SCP %s listening on %s:%d (peers: %s)",
            self.ae_title,
            self.bind_address,
            self.port,
            ", ".join(self.allowed_peers),
        )
        return self

    def stop(self) -> None:
        """Stop listening and close open associations (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    @contextmanager
    def expect(self, staged: StagedSeries) -> Iterator[StagedSeries]:
        """Route instances of ``staged.series_uid`` into ``staged`` while the block runs."""
        with self._lock:
            if staged.series_uid in self._pending:
                raise StorageScpError(f"series {staged.series_uid} is already being retrieved")
            self._pending[staged.series_uid] = staged
        try:
            yield staged
        finally:
            with self._lock:
                self._pending.pop(staged.series_uid, None)

    def _on_store(self, event: evt.Event) -> int:
        try:
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", ""))
            sop_uid = str(ds.get("SOPInstanceUID", ""))
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            log.warning("storage SCP: undecodable instance refused (%s)", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        with self._lock:
            staged = self._pending.get(series_uid)
            if staged is None and self._receive is not None:
                try:
                    return self._receive(sop_uid, event.encoded_dataset(), ds)
                except DicomInvalid as exc:
                    log.warning("storage SCP: %s", exc)
                    return STATUS_CANNOT_UNDERSTAND
                except OSError as exc:
                    log.error("storage SCP: cannot write instance %s: %s", sop_uid, exc.strerror)
                    return STATUS_OUT_OF_RESOURCES
            if staged is None:
                self.refused_instances += 1
                log.warning(
                    "storage SCP: unsolicited instance %s of series %s from %s refused",
                    sop_uid,
                    series_uid,
                    event.assoc.requestor.ae_title,
                )
                return STATUS_UNSOLICITED
            try:
                staged.add_bytes(sop_uid, event.encoded_dataset())
            except DicomInvalid as exc:
                log.warning("storage SCP: %s", exc)
                return STATUS_CANNOT_UNDERSTAND
            except OSError as exc:
                log.error("storage SCP: cannot write instance %s: %s", sop_uid, exc.strerror)
                return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS
