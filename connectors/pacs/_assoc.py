"""Opening DICOM associations with timeouts and retries, and reading DIMSE statuses.

Every failure ends in a :class:`~connectors.errors.AssociationError` whose message names
the calling and called AE titles, ``host:port``, the number of attempts and the reason;
never a dataset's content.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from connectors.errors import AssociationError, DimseStatusError, PacsError
from connectors.pacs._retry import RetryPolicy

log = logging.getLogger("connectors.pacs.dimse")

T = TypeVar("T")


@dataclass(frozen=True)
class Peer:
    """Where and as whom we talk DIMSE.

    Args:
        host: PACS host name or address.
        port: PACS DIMSE port.
        called_aet: the PACS' AE title.
        calling_aet: our AE title.
        assoc_timeout_s: TCP connect and ACSE (association negotiation) timeout.
        dimse_timeout_s: longest wait for one DIMSE message (a C-FIND match, a C-GET
            pending response).
        network_timeout_s: an association idle this long is aborted.
        retry: retries of a refused, aborted or timed-out association.
        tls: a client TLS context (DICOM over TLS), or None for plain TCP.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str
    assoc_timeout_s: float = 30.0
    dimse_timeout_s: float = 120.0
    network_timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("called_aet", "calling_aet"):
            value = getattr(self, name)
            if not value or len(value) > 16 or "\\" in value or not value.isprintable():
                raise ValueError(f"{name} {value!r} is not a valid AE title (1-16 characters)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")

    def describe(self) -> str:
        tls = " (TLS)" if self.tls is not None else ""
        return f"{self.calling_aet} -> {self.called_aet}@{self.host}:{self.port}{tls}"

    def make_ae(self) -> AE:
        """A requestor AE carrying our AE title and the timeouts."""
        ae = AE(ae_title=self.calling_aet)
        ae.connection_timeout = self.assoc_timeout_s
        ae.acse_timeout = self.assoc_timeout_s
        ae.dimse_timeout = self.dimse_timeout_s
        ae.network_timeout = self.network_timeout_s
        return ae


class Interrupted(PacsError):  # noqa: N818 - control flow inside this package
    """The association broke off in the middle of an operation (abort, timeout).

    Caught by :func:`run_with_association`, which retries; never leaves this package.
    """


def set_nodelay(event: evt.Event) -> None:
    """Turn Nagle's algorithm off on a new DICOM connection (an EVT_CONN_OPEN handler).

    pynetdicom writes a PDU in several sends; with Nagle on, each request/response
    exchange waits for the peer's delayed ACK (~40 ms on Linux), which made every C-FIND,
    C-STORE and C-GET sub-operation cost tens of milliseconds on a local link.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LostResponse(Interrupted):  # noqa: N818 - control flow inside this package
    """pynetdicom dropped a response (see :func:`iter_find`); the association is intact
    and the operation is simply repeated on it."""


#: Repeats of an operation whose response pynetdicom dropped, on the same association.
LOST_RESPONSE_REPEATS = 3


class _Watch:
    """Records what happened on the wire while an association was being set up."""

    def __init__(self) -> None:
        self.connected = False
        self.aborted_by_peer = False

    def handlers(self) -> list[tuple[Any, Callable[..., None]]]:
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse)]

    def _on_open(self, event: evt.Event) -> None:
        self.connected = True
        set_nodelay(event)

    def _on_acse(self, event: evt.Event) -> None:
        if isinstance(event.primitive, A_ABORT | A_P_ABORT):  # type: ignore[attr-defined]
            self.aborted_by_peer = True


def _rejected_permanently(assoc: Association) -> bool:
    """True when the peer answered A-ASSOCIATE-RJ with result 1, *rejected-permanent*.

    PS3.8 section 9.3.4 separates this from result 2, *rejected-transient* (e.g. the
    peer's association limit): a permanent rejection (unknown called or calling AE
    title, unsupported protocol version) cannot change until someone fixes the
    configuration, so retrying it only delays the error.
    """
    rsp = assoc.acceptor.primitive if assoc.is_rejected else None
    return rsp is not None and rsp.result == 0x01


def _reason(assoc: Association, watch: _Watch, tls: bool = False) -> str:
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        if rsp is not None:
            return (
                f"association rejected ({rsp.result_str}; source: {rsp.source_str}; "
                f"reason: {rsp.reason_str})"
            )
        return "association rejected"
    if not watch.connected:
        if tls:
            return (
                "TCP/TLS connection failed (refused, unreachable, connect timeout or TLS "
                "handshake: certificate not trusted, wrong host name, no client certificate)"
            )
        return "TCP connection failed (refused, unreachable or connect timeout)"
    if watch.aborted_by_peer:
        return "association aborted by the peer (A-ABORT)"
    if assoc.is_aborted:
        return "association aborted (no acceptable presentation context or ACSE timeout)"
    return "association not established (ACSE timeout or connection closed)"


def run_with_association(
    peer: Peer,
    contexts: list[PresentationContext],
    operation: Callable[[Association], T],
    *,
    what: str,
    require: UID | None = None,
    ext_neg: list[Any] | None = None,
    handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Associate with ``peer``, run ``operation(assoc)``, release; retry on refusal/abort.

    A permanent rejection (A-ASSOCIATE-RJ result 1) ends the tries at once.
    When attempts failed for different reasons, the error lists the earlier ones too.

    ``operation`` raises :class:`Interrupted` when the association breaks off in the
    middle; that attempt is then retried too (``on_retry`` runs first, e.g. to forget
    half-received instances).  Typed DIMSE errors from ``operation`` are not retried.
    ``require`` is the SOP class the operation uses: when the PACS does not accept it the
    association is released and the error raised at once (retrying cannot help).

    Raises:
        AssociationError: after ``peer.retry.attempts`` failed tries.
    """
    ae = peer.make_ae()
    reason = ""
    reasons: list[str] = []
    attempt = 0
    for attempt in range(1, peer.retry.attempts + 1):
        if attempt > 1:
            log.warning(
                "%s: %s (%s); retry %d of %d",
                what,
                reason,
                peer.describe(),
                attempt - 1,
                peer.retry.max_retries,
            )
            peer.retry.sleep(attempt - 1)
            if on_retry is not None:
                on_retry()
        watch = _Watch()
        assoc = ae.associate(
            peer.host,
            peer.port,
            contexts=contexts,
            ae_title=peer.called_aet,
            ext_neg=ext_neg,
            evt_handlers=[*watch.handlers(), *(handlers or [])],
            tls_args=(peer.tls, peer.host) if peer.tls is not None else None,
        )
        if not assoc.is_established:
            reason = _reason(assoc, watch, tls=peer.tls is not None)
            reasons.append(reason)
            if _rejected_permanently(assoc):
                break
            continue
        if require is not None and not any(
            cx.abstract_syntax == require for cx in assoc.accepted_contexts
        ):
            assoc.release()
            raise AssociationError(
                f"{what}: {peer.describe()} did not accept the presentation context for "
                f"{require.name} ({require})",
                attempts=attempt,
                reason="presentation context rejected",
            )
        try:
            result = _run_repeating_lost(assoc, operation, what)
        except Interrupted as exc:
            reason = str(exc)
            reasons.append(reason)
            continue
        finally:
            if assoc.is_established:
                assoc.release()
        return result
    earlier = list(dict.fromkeys(r for r in reasons[:-1] if r != reason))
    also = f" (earlier attempts: {'; '.join(earlier)})" if earlier else ""
    raise AssociationError(
        f"{what}: no usable association {peer.describe()} after {attempt} "
        f"attempt(s): {reason}{also}",
        attempts=attempt,
        reason=reason,
    )


def _run_repeating_lost(assoc: Association, operation: Callable[[Association], T], what: str) -> T:
    """``operation(assoc)``, repeated on the same association (up to
    :data:`LOST_RESPONSE_REPEATS` times) when pynetdicom dropped a response."""
    for repeat in range(LOST_RESPONSE_REPEATS + 1):
        try:
            return operation(assoc)
        except LostResponse as exc:
            if repeat == LOST_RESPONSE_REPEATS or not assoc.is_established:
                raise
            log.info("%s: %s", what, exc)
    raise AssertionError("unreachable")


def check_final(service: str, status: Dataset, what: str, *, allow_warning: bool = True) -> None:
    """Raise :class:`DimseStatusError` unless ``status`` is Success (or Warning).

    An empty status means the association broke off: :class:`Interrupted`.
    """
    if "Status" not in status:
        raise Interrupted(f"{service}: no response (association aborted or DIMSE timeout)")
    code = int(status.Status)
    category = code_to_category(code)
    if category == "Success" or (allow_warning and category == "Warning"):
        return
    comment = str(status.get("ErrorComment", "")).strip()
    raise DimseStatusError(
        f"{what}: {service} failed with status 0x{code:04X} ({category})"
        + (f": {comment}" if comment else ""),
        service=service,
        status=code,
    )


C_FIND_RSP = 0x8020  # CommandField of a C-FIND response (PS3.7 section 9.3.2.2)


def iter_find(assoc: Association, query: Dataset, model: UID, what: str) -> Iterator[Dataset]:
    """The matches of one C-FIND; raises on a non-success final status.

    pynetdicom 3.0.4 has a race between its association reactor and ``send_c_find``:
    when a response arrives within microseconds (a fast local PACS) the reactor can
    take it off the queue and drop it ("Received unexpected C-FIND service message",
    pydicom/pynetdicom#875), and a match would silently be missing.  Every C-FIND
    response is therefore also counted as it is decoded (EVT_DIMSE_RECV); when more
    arrived than were delivered the query is repeated on a new association.
    """
    received = 0

    def count(event: evt.Event) -> None:
        nonlocal received
        command = getattr(event.message, "command_set", None)
        if command is not None and command.get("CommandField") == C_FIND_RSP:
            received += 1

    assoc.bind(evt.EVT_DIMSE_RECV, count)
    delivered = 0
    try:
        for status, identifier in assoc.send_c_find(query, model):
            if "Status" not in status:
                raise Interrupted("C-FIND: no response (association aborted or DIMSE timeout)")
            delivered += 1
            if code_to_category(int(status.Status)) == "Pending":
                if identifier is not None:
                    yield identifier
                continue
            check_final("C-FIND", status, what, allow_warning=False)
    finally:
        assoc.unbind(evt.EVT_DIMSE_RECV, count)
    if received != delivered:
        raise LostResponse(
            f"C-FIND: {received} responses received but {delivered} delivered "
            "(pynetdicom reactor race); repeating the query"
        )
