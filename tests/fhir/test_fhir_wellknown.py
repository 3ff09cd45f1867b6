"""``/.well-known/jwks.json`` publishes the SMART client's public key (and only that)."""

from __future__ import annotations

import threading
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from werkzeug.serving import make_server

from cds.app import create_app
from cds.config import Settings
from cds.sources import make_fhir_rest_source
from connectors.fhir._auth import SmartBackendAuth
from connectors.fhir._http import FhirHttp
from tests.servers.fhir_engine import FhirEngine


def test_jwks_endpoint_serves_the_public_key(settings: Settings, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "client.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    app = create_app(
        settings.replace(
            fhir__auth="smart-backend",
            fhir__key_alg="ES384",
            fhir__private_key_file=str(pem),
            fhir__key_id="k-2026",
        )
    )
    resp = app.test_client().get("/.well-known/jwks.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    doc = resp.get_json()
    (jwk,) = doc["keys"]
    assert jwk["kid"] == "k-2026" and jwk["alg"] == "ES384" and jwk["kty"] == "EC"
    assert "d" not in jwk  # the private part never leaves
    # an assertion signed by the client verifies with the published key
    http = FhirHttp("http://127.0.0.1:9/fhir")
    auth = SmartBackendAuth(
        http,
        client_id="c",
        private_key=str(pem),
        alg="ES384",
        key_id="k-2026",
        token_url="http://127.0.0.1:9/token",
    )
    assertion = auth.client_assertion()
    http.close()
    claims = jwt.decode(
        assertion, jwt.PyJWK(jwk).key, algorithms=["ES384"], audience="http://127.0.0.1:9/token"
    )
    assert claims["iss"] == "c"


def test_jwks_endpoint_404_without_a_smart_client(settings: Settings) -> None:
    app = create_app(settings)
    assert app.test_client().get("/.well-known/jwks.json").status_code == 404


@pytest.mark.fhir_server
def test_engine_verifies_assertions_with_our_served_jwks_url(
    settings: Settings, tmp_path: Path, engine: FhirEngine
) -> None:
    """End to end: the EHR registers our JWKS *URL*; its token endpoint fetches the key
    from our running app and accepts our assertion."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "client.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    app_settings = settings.replace(
        fhir__auth="smart-backend",
        fhir__private_key_file=str(pem),
        fhir__client_id="mprtm",
        fhir__base_url=engine.base_url,
    )
    server = make_server("127.0.0.1", 0, create_app(app_settings))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        jwks_url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
        engine.configure_auth(require=True, clients={"mprtm": {"jwks_url": jwks_url}})
        with make_fhir_rest_source(app_settings) as src:
            assert src.cohort_patient_ids("search:_id=no-such-patient") == []
        assert engine.stats()["tokensIssued"] == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
