"""``/.well-known/jwks.json`` publishes the SMART client's public key (and only that)."""

from __future__ import annotations

from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds.app import create_app
from cds.config import Settings
from connectors.fhir._auth import SmartBackendAuth
from connectors.fhir._http import FhirHttp


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
