"""Our Storage SCP accepts only configured peers; a peer that aborts is retried.

The aborting peer below is a pynetdicom acceptor whose EVT_REQUESTED handler answers
every association request with an A-ABORT (PS3.8 section 7.3): a real DICOM upper layer,
configured to misbehave, because Orthanc cannot be told to abort on request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from connectors.errors import AssociationError, StorageScpError
from connectors.pacs._contexts import MR_STORAGE_CLASSES, VERIFICATION
from connectors.pacs._scp import STATUS_UNSOLICITED, StorageScp
from connectors.pacs.cache import SeriesCache
from connectors.pacs.dimse import DimseSource
from tests.pacs.orthanc_server import free_port
from tests.pacs.pacs_env import Pacs


@pytest.fixture
def scp() -> Iterator[StorageScp]:
    server = StorageScp("MPRTM", 0, allowed_peers=["ORTHANC", "PACS2"]).start()
    yield server
    server.stop()


def _requestor(aet: str) -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = 5
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(MR_STORAGE_CLASSES[0])
    return ae


def test_scp_refuses_unknown_calling_aet(scp: StorageScp) -> None:
    assoc = _requestor("INTRUDER").associate("127.0.0.1", scp.port, ae_title="MPRTM")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.reason_str == "Calling AE title not recognised"


def test_scp_refuses_wrong_called_aet(scp: StorageScp) -> None:
    assoc = _requestor("ORTHANC").associate("127.0.0.1", scp.port, ae_title="SOMEONE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.reason_str == "Called AE title not recognised"


def test_scp_accepts_configured_peer_but_refuses_unsolicited_instances(
    scp: StorageScp, pacs: Pacs
) -> None:
    assoc = _requestor("PACS2").associate("127.0.0.1", scp.port, ae_title="MPRTM")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        status = assoc.send_c_store(pacs.series[0].files[0])
        assert status.Status == STATUS_UNSOLICITED
    finally:
        assoc.release()
    assert scp.refused_instances == 1


def test_scp_needs_a_peer_and_a_free_port(scp: StorageScp) -> None:
    with pytest.raises(ValueError, match="allowed_peers"):
        StorageScp("MPRTM", 0, allowed_peers=[" "])
    with pytest.raises(StorageScpError, match=f"cannot listen on 127.0.0.1:{scp.port}"):
        StorageScp("MPRTM", scp.port, allowed_peers=["ORTHANC"]).start()


def _echo_against(
    ae: AE, tmp_path: Path, pacs: Pacs, max_retries: int, called_aet: str | None = None, **kw: Any
) -> tuple[AssociationError, int]:
    """Serve ``ae`` (a pynetdicom acceptor with Verification) on a free port, C-ECHO it
    with our DIMSE source and return the AssociationError and the port.  ``kw`` goes to
    ``start_server`` (``evt_handlers``); a ``hold`` requestor keeps one association open."""
    ae.add_supported_context(VERIFICATION)
    port = free_port()
    hold = kw.pop("hold", None)
    server = ae.start_server(("127.0.0.1", port), block=False, **kw)
    held = None if hold is None else hold.associate("127.0.0.1", port, ae_title=ae.ae_title)
    try:
        assert held is None or held.is_established
        peer = pacs.peer(port=port, called_aet=called_aet or ae.ae_title, max_retries=max_retries)
        with pytest.raises(AssociationError) as info:
            DimseSource(peer, SeriesCache(tmp_path)).echo()
    finally:
        if held is not None:
            held.release()
        server.shutdown()
    return info.value, port


def test_aborting_peer_is_retried_then_association_error(tmp_path: Path, pacs: Pacs) -> None:
    requests: list[str] = []

    def abort(event: evt.Event) -> None:
        requests.append(event.assoc.requestor.primitive.calling_ae_title)
        event.assoc.abort()

    err, port = _echo_against(
        AE(ae_title="ABORTER"), tmp_path, pacs, 2, evt_handlers=[(evt.EVT_REQUESTED, abort)]
    )
    assert requests == ["MPRTM"] * 3  # every attempt reached the peer
    assert err.attempts == 3
    assert "aborted" in err.reason
    assert f"MPRTM -> ABORTER@127.0.0.1:{port}" in str(err)


def test_transient_rejection_is_retried(tmp_path: Path, pacs: Pacs) -> None:
    # A pynetdicom acceptor allowing one association at a time answers a second with
    # A-ASSOCIATE-RJ result 2 (rejected-transient, local limit exceeded): worth retrying.
    ae = AE(ae_title="BUSY")
    ae.maximum_associations = 1
    err, _ = _echo_against(ae, tmp_path, pacs, 2, hold=_requestor("HOLDER"))
    assert err.attempts == 3
    assert "Rejected Transient" in err.reason
    assert "Local limit exceeded" in err.reason


def test_abort_then_permanent_rejection_stops_and_reports_both(tmp_path: Path, pacs: Pacs) -> None:
    # The first request is aborted; the second reaches the ACSE checks and is rejected
    # permanently (called AE title not ours): no third try, and both reasons are named.
    requests: list[str] = []

    def abort_first(event: evt.Event) -> None:
        requests.append(event.assoc.requestor.primitive.called_ae_title)
        if len(requests) == 1:
            event.assoc.abort()

    ae = AE(ae_title="STRICT")
    ae.require_called_aet = True
    err, _ = _echo_against(
        ae, tmp_path, pacs, 3, "NOT-STRICT", evt_handlers=[(evt.EVT_REQUESTED, abort_first)]
    )
    assert requests == ["NOT-STRICT"] * 2
    assert err.attempts == 2
    assert "Rejected Permanent" in err.reason
    msg = str(err)
    assert "after 2 attempt(s): association rejected" in msg
    assert msg.endswith("(earlier attempts: association aborted by the peer (A-ABORT))")
