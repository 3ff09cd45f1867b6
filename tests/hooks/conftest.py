"""Fixtures of the CDS Hooks tests: keys and JWKS, a migrated SQLite database, the app."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy.orm import Session, sessionmaker

from cds.app import create_app
from cds.config import Settings
from cds.db import migrate
from cds.hooks import set_scorer
from tests.hooks.helpers import BASE_URL, ISS, ISS_JKU, PUBLIC_URL, RuleScorer


class Keys:
    """The EHR's signing keys (EC P-384 and RSA 2048) and their public JWK Sets."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP384R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_ec = ec.generate_private_key(ec.SECP384R1())

    def jwks(self, *, kid_ec: str = "ec-1", kid_rsa: str = "rsa-1") -> dict[str, Any]:
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        ec_jwk.update(kid=kid_ec, use="sig", alg="ES384")
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        rsa_jwk.update(kid=kid_rsa, use="sig", alg="RS384")
        return {"keys": [ec_jwk, rsa_jwk]}


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def jwks_file(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwks") / "ehr-jwks.json"
    path.write_text(json.dumps(keys.jwks()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def jwks_server(keys: Keys) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the second EHR's JWK Set (for ``jku``)."""
    body = json.dumps(keys.jwks(kid_ec="jku-ec")).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(template_db: Path, tmp_path: Path) -> str:
    path = tmp_path / "mprtm.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def make_settings(db_url: str, jwks_file: Path, jwks_server: str) -> Callable[..., Settings]:
    def build(*, fhir_servers: tuple[str, ...] = (), **hooks: Any) -> Settings:
        """Settings of the app under test; ``fhir_servers``: origins the first issuer may
        name as ``fhirServer`` (local test servers: http and loopback allowed for them)."""
        cds_hooks: dict[str, Any] = {
            "base_url": BASE_URL,
            "require_jwt": True,
            "fresh_hours": 36.0,
            "time_budget_ms": 5000,  # generous: CI machines are busy; budget tests set theirs
            "cors_origins": ["*"],
            "trusted_issuers": [
                {"iss": ISS, "jwks_file": str(jwks_file), "fhir_servers": list(fhir_servers)},
                {
                    "iss": ISS_JKU,
                    "jwks_url": "",
                    "jwks_file": "",
                    "jku_allowed": [f"{jwks_server}/jwks.json"],
                },
            ],
        }
        if fhir_servers:
            cds_hooks["allow_http_fhir_server"] = True
            cds_hooks["internal_fhir_servers"] = list(fhir_servers)
        cds_hooks.update(hooks)
        return Settings().replace(
            database__url=db_url,
            server__public_url=PUBLIC_URL,
            cds_hooks=cds_hooks,
        )

    return build


@pytest.fixture
def scorer() -> RuleScorer:
    return RuleScorer()


@pytest.fixture
def app(make_settings: Callable[..., Settings], scorer: RuleScorer) -> Iterator[Flask]:
    application = create_app(make_settings())
    set_scorer(application, scorer)
    yield application
    application.extensions["mprtm.hooks"].engine.close()
    application.extensions["mprtm.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sessions(app: Flask) -> sessionmaker[Session]:
    return app.extensions["mprtm.sessions"]  # type: ignore[no-any-return]


TokenFactory = Callable[..., str]


@pytest.fixture
def token(keys: Keys) -> TokenFactory:
    """``token(aud, **claims_or_options)``: a signed JWT as an EHR would send it."""

    def make(
        aud: str | list[str],
        *,
        alg: str = "ES384",
        kid: str | None = None,
        iss: str = ISS,
        jku: str | None = None,
        exp_in: float = 300,
        iat_offset: float = 0,
        jti: str | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "exp": now + int(exp_in),
            "iat": now + int(iat_offset),
            "jti": jti or str(uuid.uuid4()),
        }
        for name in drop:
            claims.pop(name, None)
        key: Any = keys.ec if alg == "ES384" else keys.rsa
        headers: dict[str, Any] = {"kid": kid or ("ec-1" if alg == "ES384" else "rsa-1")}
        headers["typ"] = "JWT"
        if jku is not None:
            headers["jku"] = jku
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    return make
