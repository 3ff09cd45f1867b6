"""Requests the service makes to the ``fhirServer`` a caller names: which origins may get
them (and the EHR's token), how long and how much they may take, and 412 when the server
cannot be reached.  Every server here is real HTTP on 127.0.0.1 (``tests/hooks/local_fhir``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from cds.app import create_app
from cds.config import Settings
from cds.hooks import set_scorer
from connectors.fhir.outbound import OriginPolicy, same_origin
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    LVEF,
    PV,
    RuleScorer,
    auth,
    bundle,
    full_prefetch,
    hook_body,
    observation,
    service_url,
)
from tests.hooks.local_fhir import LocalFhir

EHR_TOKEN = "ehr-access-token-for-fhir"
PID = "p-outbound"


@pytest.fixture
def server_a() -> Iterator[LocalFhir]:
    s = LocalFhir()
    yield s
    s.close()


@pytest.fixture
def server_b() -> Iterator[LocalFhir]:
    s = LocalFhir()
    yield s
    s.close()


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**kw: Any) -> Flask:
        app = create_app(make_settings(**kw))
        set_scorer(app, RuleScorer())
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def _body(fhir_server: str, prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    return hook_body(
        PID,
        prefetch=prefetch,
        fhirServer=fhir_server,
        fhirAuthorization={
            "access_token": EHR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "mprtm-cds",
        },
    )


def _post(app: Flask, token: TokenFactory, body: Any) -> Any:
    return app.test_client().post(
        f"/cds-services/{PV}", json=body, headers=auth(token(service_url(PV)))
    )


# -- which origins ---------------------------------------------------------------------


def test_a_fhir_server_not_bound_to_the_issuer_gets_nothing(
    make_app: Callable[..., Flask],
    server_a: LocalFhir,
    server_b: LocalFhir,
    token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(fhir_servers=(server_a.base_url,))
    with caplog.at_level(logging.WARNING, logger="mprtm.hooks"):
        resp = _post(app, token, _body(server_b.base_url))
    # answered as if no FHIR access was given: no prefetch, no earlier result -> 412
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert server_b.hits() == 0 and server_a.hits() == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "fhirServer refused" in logged and "not allowed for this caller" in logged
    assert EHR_TOKEN not in logged


def test_plain_http_needs_the_demo_setting(
    make_app: Callable[..., Flask], server_a: LocalFhir, token: TokenFactory
) -> None:
    app = make_app(fhir_servers=(server_a.base_url,), allow_http_fhir_server=False)
    prefetch = full_prefetch(PID)
    del prefetch["conditions"]
    resp = _post(app, token, _body(server_a.base_url, prefetch))
    assert resp.status_code == 200
    assert server_a.hits() == 0


def test_loopback_needs_an_allow_list_entry(
    make_app: Callable[..., Flask], server_a: LocalFhir, token: TokenFactory
) -> None:
    app = make_app(fhir_servers=(server_a.base_url,), internal_fhir_servers=[])
    prefetch = full_prefetch(PID)
    del prefetch["conditions"]
    resp = _post(app, token, _body(server_a.base_url, prefetch))
    assert resp.status_code == 200
    assert server_a.hits() == 0
    assert "not available: conditions" in resp.get_json()["cards"][0]["detail"]


def test_an_allowed_server_is_used_with_the_token(
    make_app: Callable[..., Flask], server_a: LocalFhir, token: TokenFactory
) -> None:
    app = make_app(fhir_servers=(server_a.base_url,))
    resp = _post(app, token, _body(server_a.base_url))
    assert resp.status_code == 200
    assert "computed now" in resp.get_json()["cards"][0]["summary"]
    assert server_a.hits() == 7
    assert {a for _, a in server_a.requests} == {f"Bearer {EHR_TOKEN}"}


@pytest.mark.parametrize(
    ("url", "addresses", "fragment"),
    [
        ("https://fhir.example.org/r4", ["93.184.215.14"], None),
        ("https://fhir.example.org:443/r4", ["93.184.215.14"], None),
        ("http://fhir.example.org/r4", ["93.184.215.14"], "https required"),
        ("https://fhir.example.org:8443/r4", ["93.184.215.14"], "not allowed"),
        ("https://evil.example.org/r4", ["93.184.215.14"], "not allowed"),
        ("https://fhir.example.org/r4", ["10.0.0.5"], "internal address"),
        ("https://fhir.example.org/r4", ["169.254.169.254"], "internal address"),
        ("https://fhir.example.org/r4", ["127.0.0.1"], "internal address"),
        ("https://fhir.example.org/r4", ["::1"], "internal address"),
        ("https://fhir.example.org/r4", ["::ffff:192.168.1.1"], "internal address"),
        ("https://fhir.example.org/r4", ["fe80::1%eth0"], "internal address"),
        ("https://fhir.example.org/r4", ["93.184.215.14", "10.1.1.1"], "internal address"),
        ("ftp://fhir.example.org/r4", ["93.184.215.14"], "not an http(s) URL"),
        ("https:///r4", [], "not an http(s) URL"),
    ],
)
def test_origin_policy(url: str, addresses: list[str], fragment: str | None) -> None:
    policy = OriginPolicy(allowed=("https://fhir.example.org",), resolver=lambda h, p: addresses)
    reason = policy.refusal(url)
    if fragment is None:
        assert reason is None
    else:
        assert reason is not None and fragment in reason


def test_same_origin_fills_default_ports() -> None:
    assert same_origin("https://a.example/x?y", "https://A.example:443/base")
    assert not same_origin("http://a.example/x", "https://a.example/x")
    assert not same_origin("https://a.example:8443/x", "https://a.example/x")
    assert not same_origin("https://a.example.evil.org/x", "https://a.example/x")
    assert not same_origin("not a url", "https://a.example/x")


# -- paging ----------------------------------------------------------------------------


def test_a_next_link_on_another_origin_gets_no_token(
    make_app: Callable[..., Flask],
    server_a: LocalFhir,
    server_b: LocalFhir,
    token: TokenFactory,
) -> None:
    server_a.next_url = f"{server_b.base_url}/Observation?page=2"
    app = make_app(fhir_servers=(server_a.base_url,))
    assert _post(app, token, _body(server_a.base_url)).status_code == 200
    assert server_b.requests == []


def test_a_next_link_on_the_same_origin_is_followed(
    make_app: Callable[..., Flask], server_a: LocalFhir, token: TokenFactory
) -> None:
    server_a.next_url = f"{server_a.base_url}/Observation?page=2"
    app = make_app(fhir_servers=(server_a.base_url,))
    assert _post(app, token, _body(server_a.base_url)).status_code == 200
    second = [p for p, _ in server_a.requests if "page=2" in p]
    assert len(second) == 6  # one per search key


# -- deadlines, byte caps, cancellation ------------------------------------------------


def test_slow_drip_servers_do_not_starve_honest_calls(
    make_app: Callable[..., Flask], server_a: LocalFhir, token: TokenFactory
) -> None:
    """Three calls to a server that drips one byte every 0.5 s (7 fetches each, 21 for
    a pool of 16): when they have been answered, their fetches are closed, and an honest
    call right after gets its data in time."""
    drip = LocalFhir(mode="drip")
    try:
        app = make_app(fhir_servers=(server_a.base_url, drip.base_url), time_budget_ms=800)
        statuses: list[int] = []

        def slow_call() -> None:
            statuses.append(_post(app, token, _body(drip.base_url)).status_code)

        threads = [threading.Thread(target=slow_call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(statuses) == 3
        deadline = time.monotonic() + 1.5
        while drip.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert drip.active == 0, f"{drip.active} drip responses still held open"
        resp = _post(app, token, _body(server_a.base_url))
        assert resp.status_code == 200
        assert "computed now" in resp.get_json()["cards"][0]["summary"], resp.get_json()
    finally:
        drip.close()


def test_a_response_over_the_byte_cap_is_not_read(
    make_app: Callable[..., Flask], token: TokenFactory
) -> None:
    big = LocalFhir(mode="big")
    try:
        app = make_app(fhir_servers=(big.base_url,), fetch_max_bytes=50_000)
        prefetch = full_prefetch(PID)
        del prefetch["conditions"]
        resp = _post(app, token, _body(big.base_url, prefetch))
        assert resp.status_code == 200
        assert "not available: conditions" in resp.get_json()["cards"][0]["detail"]
    finally:
        big.close()


def test_resources_per_prefetch_key_are_capped(
    make_app: Callable[..., Flask], token: TokenFactory
) -> None:
    app = make_app(max_resources_per_key=50)
    scorer = RuleScorer()
    set_scorer(app, scorer)
    prefetch = full_prefetch(PID)
    prefetch["observations"] = bundle(
        *(observation(f"o-{i}", PID, LVEF, 30 + i % 10, "%") for i in range(400))
    )
    resp = _post(app, token, hook_body(PID, prefetch=prefetch))
    assert resp.status_code == 200
    [(record, _)] = scorer.calls
    assert len(record.observations) == 50
    assert "more than 50 resources" in resp.get_json()["cards"][0]["detail"]


def test_a_huge_prefetch_does_not_keep_a_worker_past_the_budget(
    make_app: Callable[..., Flask], token: TokenFactory
) -> None:
    app = make_app(time_budget_ms=300, max_resources_per_key=100_000)
    prefetch = full_prefetch(PID)
    prefetch["observations"] = bundle(
        *(observation(f"o-{i}", PID, LVEF, 30, "%") for i in range(12_000))
    )
    body = hook_body(PID, prefetch=prefetch)
    resp = _post(app, token, body)
    assert resp.status_code == 200
    engine = app.extensions["mprtm.hooks"].engine
    t0 = time.monotonic()
    while engine._in_flight and time.monotonic() - t0 < 3.0:
        time.sleep(0.02)
    assert engine._in_flight == 0
    assert time.monotonic() - t0 < 0.5, "the scoring worker kept parsing after the budget"


# -- 412 -------------------------------------------------------------------------------


def test_an_unreachable_fhir_server_without_prefetch_is_412(
    make_app: Callable[..., Flask], token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gone = LocalFhir()
    url = gone.base_url
    gone.close()  # nothing listens on that port now
    app = make_app(fhir_servers=(url,))
    with caplog.at_level(logging.WARNING, logger="mprtm.hooks"):
        resp = _post(app, token, _body(url))
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "precondition-failed"
    assert "fhirServer could not be reached" in resp.get_json()["message"]
    assert any("412 for patient" in r.getMessage() for r in caplog.records)
