"""JWT trust of CDS Clients, from CDS Hooks 2.0 "Trusting CDS Clients" and "JWT Signing Algorithm".

Every call carries ``Authorization: Bearer <JWT>``; ``aud`` is the URL of the endpoint
called; ``exp``, ``iat`` and ``jti`` are required; ``none`` and symmetric algorithms
"SHALL NOT" be used; services "SHOULD limit the CDS Clients they trust by maintaining an
allowlist of iss and jku urls".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from cds.app import create_app
from cds.config import Settings
from cds.db.session import make_engine, session_factory
from cds.hooks.blueprint import set_scorer
from cds.hooks.security import ReplayCache
from tests.hooks.conftest import Keys, TokenFactory
from tests.hooks.helpers import ISS, ISS_JKU, PV, add_prediction, auth, hook_body, service_url


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(aud: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    c.update(over)
    return c


def _call(client: FlaskClient, tok: str | None, service: str = PV) -> Any:
    headers = auth(tok) if tok is not None else {}
    return client.post(f"/cds-services/{service}", json=hook_body("p-jwt"), headers=headers)


def _assert_401(resp: Any, fragment: str) -> None:
    assert resp.status_code == 401, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"] == "unauthorized"
    assert fragment in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture(autouse=True)
def _nightly(sessions: Any) -> None:
    add_prediction(sessions, "p-jwt", age_hours=1)


def test_valid_es384_token_is_accepted(client: FlaskClient, token: TokenFactory) -> None:
    resp = _call(client, token(service_url(PV)))
    assert resp.status_code == 200
    assert len(resp.get_json()["cards"]) == 1


def test_valid_rs384_token_is_accepted(client: FlaskClient, token: TokenFactory) -> None:
    assert _call(client, token(service_url(PV), alg="RS384")).status_code == 200


def test_aud_as_array_is_accepted(client: FlaskClient, token: TokenFactory) -> None:
    assert _call(client, token([service_url(PV)])).status_code == 200


def test_discovery_needs_a_token_for_the_discovery_url(
    client: FlaskClient, token: TokenFactory
) -> None:
    _assert_401(client.get("/cds-services"), "missing Authorization")
    _assert_401(client.get("/cds-services", headers=auth(token(service_url(PV)))), "aud")
    assert client.get("/cds-services", headers=auth(token(service_url()))).status_code == 200


def test_missing_token(client: FlaskClient) -> None:
    _assert_401(_call(client, None), "missing Authorization")


def test_not_a_bearer_header(client: FlaskClient) -> None:
    resp = client.post(
        f"/cds-services/{PV}", json=hook_body("p-jwt"), headers={"Authorization": "Basic abc"}
    )
    _assert_401(resp, "not a Bearer")


def test_garbage_token(client: FlaskClient) -> None:
    _assert_401(_call(client, "not.a.jwt"), "well-formed")


def test_expired_token(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV), exp_in=-120, iat_offset=-400)
    _assert_401(_call(client, tok), "expired")


def test_expiry_within_leeway_is_accepted(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV), exp_in=-10, iat_offset=-100)  # leeway is 60 s
    assert _call(client, tok).status_code == 200


def test_iat_in_the_future(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV), iat_offset=600, exp_in=900)
    _assert_401(_call(client, tok), "iat")


def test_lifetime_longer_than_allowed(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV), exp_in=7200)
    _assert_401(_call(client, tok), "lifetime")


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "aud"])
def test_required_claims(client: FlaskClient, token: TokenFactory, claim: str) -> None:
    tok = token(service_url(PV), drop=(claim,))
    _assert_401(_call(client, tok), claim if claim != "aud" else "aud")


def test_wrong_aud(client: FlaskClient, token: TokenFactory) -> None:
    other = service_url("mprtm-hf-risk-discharge")
    _assert_401(_call(client, token(other)), "aud")
    _assert_401(_call(client, token("https://elsewhere.example/cds-services/" + PV)), "aud")


def test_unknown_issuer(client: FlaskClient, token: TokenFactory) -> None:
    _assert_401(_call(client, token(service_url(PV), iss="https://evil.example")), "not trusted")


def test_jku_not_allow_listed(client: FlaskClient, token: TokenFactory, jwks_server: str) -> None:
    # An issuer with neither file nor URL: a jku outside its allow-list is refused.
    tok = token(service_url(PV), iss=ISS_JKU, jku="https://attacker.example/jwks.json")
    _assert_401(_call(client, tok), "not allow-listed")
    # An issuer with a jwks_file: its file is used whatever the jku says.
    tok = token(service_url(PV), jku=f"{jwks_server}/other-jwks.json")
    assert _call(client, tok).status_code == 200


def test_allow_listed_jku_is_fetched_and_used(
    client: FlaskClient, token: TokenFactory, jwks_server: str
) -> None:
    tok = token(service_url(PV), iss=ISS_JKU, jku=f"{jwks_server}/jwks.json", kid="jku-ec")
    assert _call(client, tok).status_code == 200


def test_unknown_kid(client: FlaskClient, token: TokenFactory) -> None:
    _assert_401(_call(client, token(service_url(PV), kid="nope")), "kid")


def test_alg_none_is_rejected(client: FlaskClient) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": "ec-1"}
    payload = _claims(service_url(PV))
    tok = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."
    _assert_401(_call(client, tok), "'none'")


def test_hs256_signed_with_the_public_key_is_rejected(client: FlaskClient, keys: Keys) -> None:
    # The classic key-confusion attack: HMAC keyed with the EHR's public key (PEM).
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(service_url(PV))).encode())}"
    )
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    _assert_401(_call(client, f"{signing_input}.{_b64(sig)}"), "'HS256'")


def test_rs384_header_over_an_ec_key_is_rejected(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV), alg="RS384", kid="ec-1")  # signed with RSA, kid names EC key
    assert _call(client, tok).status_code == 401


def test_replayed_jti_is_rejected(client: FlaskClient, token: TokenFactory) -> None:
    tok = token(service_url(PV))
    assert _call(client, tok).status_code == 200
    _assert_401(_call(client, tok), "replay")
    # The same jti in a fresh token is a replay too.
    jti = str(uuid.uuid4())
    assert _call(client, token(service_url(PV), jti=jti)).status_code == 200
    _assert_401(_call(client, token(service_url(PV), jti=jti)), "replay")


def test_tampered_signature_is_rejected(client: FlaskClient, token: TokenFactory) -> None:
    head, payload, sig = token(service_url(PV)).split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["iss"] = ISS
    forged["tenant"] = "someone-else"
    tampered = f"{head}.{_b64(json.dumps(forged).encode())}.{sig}"
    _assert_401(_call(client, tampered), "signature")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    _assert_401(_call(client, f"{head}.{payload}.{flipped}"), "signature")


def test_signed_by_an_unknown_key(client: FlaskClient, keys: Keys) -> None:
    import jwt

    tok = jwt.encode(
        _claims(service_url(PV)), keys.other_ec, algorithm="ES384", headers={"kid": "ec-1"}
    )
    _assert_401(_call(client, tok), "signature")


def test_feedback_accepts_service_or_feedback_url_as_aud(
    client: FlaskClient, token: TokenFactory
) -> None:
    body = {"feedback": []}  # authenticated, then 400 for the empty list
    for aud in (service_url(PV), service_url(PV) + "/feedback"):
        resp = client.post(f"/cds-services/{PV}/feedback", json=body, headers=auth(token(aud)))
        assert resp.status_code == 400
    resp = client.post(
        f"/cds-services/{PV}/feedback", json=body, headers=auth(token(service_url()))
    )
    assert resp.status_code == 401


def test_replay_cache_expires_entries(db_url: str) -> None:
    engine = make_engine(db_url)
    cache = ReplayCache(session_factory(engine), purge_every=2)
    now = 1000.0
    assert cache.first_use("i", "a", now + 10, now=now)
    assert not cache.first_use("i", "a", now + 10, now=now + 5)
    assert cache.first_use("i", "a", now + 30, now=now + 11)  # expired: usable again
    assert not cache.first_use("i", "a", now + 30, now=now + 12)  # ... and remembered again
    assert cache.first_use("other", "a", now + 10, now=now)  # per issuer
    for j in "bcd":
        assert cache.first_use("i", j, now + 100, now=now + 50)
    # every second first use purges what has expired: at now + 50 both "a" pairs went
    assert len(cache) == 3
    assert cache.purge(now=now + 1000) == 3 and len(cache) == 0
    engine.dispose()


def test_a_replay_to_another_server_process_is_refused(
    app: Flask, make_settings: Callable[..., Settings], scorer: Any, token: TokenFactory
) -> None:
    """A second application on the same database stands for a second `mprtm serve`
    process behind one proxy: a token used on one is refused on the other."""
    other = create_app(make_settings())
    set_scorer(other, scorer)
    try:
        tok = token(service_url(PV))
        assert _call(app.test_client(), tok).status_code == 200
        _assert_401(_call(other.test_client(), tok), "replay")
    finally:
        other.extensions["mprtm.hooks"].engine.close()
        other.extensions["mprtm.engine"].dispose()


def test_require_jwt_false_is_explicit_and_logged(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, sessions: Any
) -> None:
    settings = make_settings(require_jwt=False)
    with caplog.at_level(logging.WARNING, logger="mprtm.hooks"):
        app = create_app(settings)
    assert any("NOT authenticated" in r.getMessage() for r in caplog.records)
    resp = app.test_client().get("/cds-services")
    assert resp.status_code == 200
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()
