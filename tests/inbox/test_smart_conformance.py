"""SMART App Launch conformance: the OpenID issuer, a required id_token, a confidential
asymmetric client (private_key_jwt) and the fhirContext/appContext of the launch, all
against the test authorization server in smart_server.py over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from cds.app import create_app
from connectors.fhir.jwks import load_private_key, public_jwk

from .browser import serve
from .conftest import make_settings
from .smart_server import SmartTestServer
from .test_smart import CLIENT_ID, PUBLIC, launch


@pytest.fixture
def smart() -> Iterator[SmartTestServer]:
    server = SmartTestServer(client_id=CLIENT_ID, redirect_uri=f"{PUBLIC}/inbox/callback")
    with serve(server.app()) as url:
        server.base_url = url
        yield server


def _app(db_url: str, smart: SmartTestServer, **server: Any) -> Flask:
    settings = make_settings(
        db_url, public_url=PUBLIC, smart_client_id=CLIENT_ID, smart_issuers=[smart.fhir_base]
    )
    settings = settings.replace(**{f"server__{k}": v for k, v in server.items()})
    return create_app(settings, TESTING=True)


@pytest.fixture
def public_app(db_url: str, data: Any, smart: SmartTestServer) -> Iterator[Flask]:
    app = _app(db_url, smart)
    yield app
    app.extensions["mprtm.engine"].dispose()


def _key_file(tmp_path: Path, alg: str) -> Path:
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    path = tmp_path / f"inbox-{alg}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# ------------------------------------------------------------------ id_token (13, 14)
def test_id_token_issuer_is_the_openid_issuer_not_the_fhir_base(
    public_app: Flask, smart: SmartTestServer
) -> None:
    assert smart.issuer != smart.fhir_base
    client = public_app.test_client()
    resp, _ = launch(client, smart)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert b"smart:Practitioner/dr-test" in client.get("/inbox/patients/p-high").data

    # A token claiming the FHIR base URL as its issuer is not from the OpenID issuer.
    def fhir_base_token(sub: str) -> str:
        now = int(time.time())
        claims = {"iss": smart.fhir_base, "sub": sub, "aud": CLIENT_ID, "iat": now}
        claims["exp"] = now + 300
        return jwt.encode(claims, smart._key, algorithm="RS256", headers={"kid": smart.kid})

    smart.id_token = fhir_base_token  # type: ignore[method-assign]
    resp, _ = launch(public_app.test_client(), smart)
    assert resp.status_code == 502 and b"id_token rejected (InvalidIssuerError)" in resp.data


def test_openid_asked_but_no_id_token_is_refused(public_app: Flask, smart: SmartTestServer) -> None:
    smart.send_id_token = False
    client = public_app.test_client()
    resp, _ = launch(client, smart)
    assert resp.status_code == 502 and b"no id_token came" in resp.data
    assert client.get("/inbox/patients/p-high").status_code != 200  # no session was made


def test_without_openid_no_id_token_is_needed(
    db_url: str, data: Any, smart: SmartTestServer
) -> None:
    smart.send_id_token = False
    app = _app(db_url, smart, smart_scope="launch")
    client = app.test_client()
    resp, _ = launch(client, smart)
    assert resp.status_code == 302
    assert b"smart:ehr-user" in client.get("/inbox/patients/p-high").data
    app.extensions["mprtm.engine"].dispose()


def test_discovery_without_openid_issuer_is_refused_when_openid_is_asked(
    public_app: Flask, smart: SmartTestServer
) -> None:
    plain = smart.app()
    view = plain.view_functions["configuration"]

    def no_issuer() -> Any:
        doc = view().get_json()
        doc.pop("issuer")
        return doc

    plain.view_functions["configuration"] = no_issuer
    with serve(plain) as url:
        smart.base_url = url
        settings = public_app.extensions["mprtm.settings"]
        app = create_app(settings.replace(server__smart_issuers=[smart.fhir_base]), TESTING=True)
        resp = app.test_client().get(
            "/inbox/launch",
            query_string={"launch": smart.new_launch("p-high"), "iss": url + "/fhir"},
        )
        app.extensions["mprtm.engine"].dispose()
    assert resp.status_code == 502 and b"&#39;issuer&#39; missing" in resp.data
    assert smart.authorize_requests == []


# ------------------------------------------------------------------ private_key_jwt (15)
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_confidential_asymmetric_client(
    db_url: str, data: Any, smart: SmartTestServer, tmp_path: Path, alg: str
) -> None:
    key_file = _key_file(tmp_path, alg)
    app = _app(
        db_url,
        smart,
        smart_client_auth="private_key_jwt",
        smart_private_key_file=str(key_file),
        smart_key_alg=alg,
    )
    # The EHR registers the key the inbox publishes.
    published = app.test_client().get("/.well-known/jwks.json")
    assert published.status_code == 200
    (jwk,) = published.get_json()["keys"]
    assert jwk["alg"] == alg and "d" not in jwk
    assert jwk == public_jwk(load_private_key(key_file, alg), alg)
    smart.client_jwk = jwk

    client = app.test_client()
    resp, _ = launch(client, smart)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    form = smart.token_requests[-1]
    assert form["client_assertion_type"].endswith(":client-assertion-type:jwt-bearer")
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == f"{smart.base_url}/auth/token"
    assert len(smart.assertion_ids) == 1

    # A second launch signs a fresh assertion (new jti).
    resp, _ = launch(app.test_client(), smart)
    assert resp.status_code == 302 and len(smart.assertion_ids) == 2
    app.extensions["mprtm.engine"].dispose()


def test_public_client_is_refused_where_a_key_is_registered(
    public_app: Flask, smart: SmartTestServer, tmp_path: Path
) -> None:
    key = load_private_key(_key_file(tmp_path, "RS384"), "RS384")
    smart.client_jwk = public_jwk(key, "RS384")
    resp, _ = launch(public_app.test_client(), smart)
    assert resp.status_code == 502 and b"HTTP 401 invalid_client" in resp.data


def test_private_key_jwt_without_a_usable_key(
    db_url: str, data: Any, smart: SmartTestServer, tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("nope")
    app = _app(db_url, smart, smart_client_auth="private_key_jwt", smart_private_key_file=str(bad))
    resp, _ = launch(app.test_client(), smart)
    assert resp.status_code == 503 and b"smart_private_key_file" in resp.data
    assert smart.token_requests == []
    app.extensions["mprtm.engine"].dispose()


# ------------------------------------------------------------------ launch context (16)
def test_fhir_context_and_app_context_are_read(public_app: Flask, smart: SmartTestServer) -> None:
    card = "5b1e1a7e-0b7a-4a55-9d2f-3c1f0c7d9e11"
    app_context = json.dumps({"patientId": "p-high", "cardUuid": card, "predictionId": 1})
    launch_id = smart.new_launch(
        "p-high",
        app_context=app_context,
        fhir_context=[
            {"reference": "Encounter/enc-1", "role": "launch"},
            "Observation/obs-7",  # SMART 2.0 form
            {"canonical": "http://example.org/Questionnaire/q"},  # no reference: skipped
            {"reference": "https://elsewhere.example/Encounter/x"},  # absolute: skipped
            {"reference": "Patient/p-high"},  # the patient itself: not repeated
        ],
    )
    client = public_app.test_client()
    resp, _ = launch(client, smart, launch_id=launch_id)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/inbox/patients/p-high#alerts-h"
    with client.session_transaction() as sess:
        assert sess["smart"]["context"] == "Encounter/enc-1 Observation/obs-7"
        assert sess["smart"]["card"] == card
    page = client.get("/inbox/patients/p-high").get_data(as_text=True)
    assert 'id="launch-context"' in page
    assert "Encounter/enc-1 Observation/obs-7" in page and card in page


def test_app_context_about_another_patient_is_ignored(
    public_app: Flask, smart: SmartTestServer
) -> None:
    app_context = json.dumps({"patientId": "p-mod", "cardUuid": "abc"})
    launch_id = smart.new_launch("p-high", app_context=app_context)
    client = public_app.test_client()
    resp, _ = launch(client, smart, launch_id=launch_id)
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox/patients/p-high"
    with client.session_transaction() as sess:
        assert sess["smart"]["card"] == "" and sess["smart"]["context"] == ""
    assert 'id="launch-context"' not in client.get("/inbox/patients/p-high").get_data(True)
