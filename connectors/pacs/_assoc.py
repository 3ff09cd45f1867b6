"""Opening DICOM associations with timeouts and retries, and reading DIMSE statuses.

Every failure ends in a :class:`~connectors.errors.AssociationError` whose message names
the calling and called AE titles, ``host:port``, the number of attempts and the reason;
never a dataset's content.
"""

from __future__ import annotations

import logging
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
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str
    assoc_timeout_s: float = 30.0
    dimse_timeout_s: float = 120.0
    network_timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for name in ("called_aet", "calling_aet"):
            value = getattr(self, name)
            if not value or len(value) > 16 or "\\" in value or not value.isprintable():
                raise ValueError(f"{name} {value!r} is not a valid AE title (1-16 characters)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")

    def describe(self) -> str:
        return f"{self.calling_aet} -> {self.called_aet}@{self.host}:{self.port}"

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


class _Watch:
    """Records what happened on the wire while an association was being set up."""

    def __init__(self) -> None:
        self.connected = False
        self.aborted_by_peer = False

    def handlers(self) -> list[tuple[Any, Callable[..., None]]]:
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse)]

    def _on_open(self, event: evt.Event) -> None:
        self.connected = True

    def _on_acse(self, event: evt.Event) -> None:
        if isinstance(event.primitive, A_ABORT | A_P_ABORT):  # type: ignore[attr-defined]
            self.aborted_by_peer = True


def _reason(assoc: Association, watch: _Watch) -> str:
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        if rsp is not None:
            return (
                f"association rejected ({rsp.result_str}; source: {rsp.source_str}; "
                f"reason: {rsp.reason_str})"
            )
        return "association rejected"
    if not watch.connected:
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
        )
        if not assoc.is_established:
            reason = _reason(assoc, watch)
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
            result = operation(assoc)
        except Interrupted as exc:
            reason = str(exc)
            continue
        finally:
            if assoc.is_established:
                assoc.release()
        return result
    raise AssociationError(
        f"{what}: no usable association {peer.describe()} after {peer.retry.attempts} "
        f"attempt(s): {reason}",
        attempts=peer.retry.attempts,
        reason=reason,
    )


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


def iter_find(assoc: Association, query: Dataset, model: str, what: str) -> Iterator[Dataset]:
    """The matches of one C-FIND; raises on a non-success final status."""
    for status, identifier in assoc.send_c_find(query, model):
        if "Status" not in status:
            raise Interrupted("C-FIND: no response (association aborted or DIMSE timeout)")
        if code_to_category(int(status.Status)) == "Pending":
            if identifier is not None:
                yield identifier
            continue
        check_final("C-FIND", status, what, allow_warning=False)
