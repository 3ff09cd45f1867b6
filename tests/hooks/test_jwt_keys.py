"""Key sets of trusted issuers: JWKs without ``alg``, which key source wins over ``jku``,
per-issuer algorithms, and JWKS loading that a slow or failing key server cannot stall.

The JWKS servers here are real HTTP servers on 127.0.0.1 (``ThreadingHTTPServer``) whose
answers the tests steer: a JWK Set, an HTTP 500, or a long silence.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.app import create_app
from cds.config import Settings, load_settings
from cds.errors import ConfigError
from cds.hooks import set_scorer
from cds.hooks.errors import Unauthorized
from cds.hooks.security import JwksStore
from tests.hooks.conftest import Keys
from tests.hooks.helpers import ISS, PV, RuleScorer, add_prediction, auth, hook_body, service_url


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 that counts its requests; ``mode`` picks the answer:
    "ok" (the set), "error" (HTTP 500) or "hang" (silence for ``hang_s``, then the set)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.mode = "ok"
        self.hang_s = 3.0
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                if outer.mode == "error":
                    self.send_error(500)
                    return
                if outer.mode == "hang":
                    time.sleep(outer.hang_s)
                body = json.dumps(outer.jwks).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks_http(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys.jwks())
    yield server
    server.close()


def _token(key: Any, alg: str, kid: str, aud: str, iss: str = ISS, **headers: Any) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **headers})


def _app(settings: Settings) -> Flask:
    app = create_app(settings)
    set_scorer(app, RuleScorer())
    add_prediction(app.extensions["mprtm.sessions"], "p-keys", age_hours=1)
    return app


def _close(app: Flask) -> None:
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()


def _call(app: Flask, tok: str) -> Any:
    return app.test_client().post(
        f"/cds-services/{PV}", json=hook_body("p-keys"), headers=auth(tok)
    )


@pytest.fixture
def issuer_settings(db_url: str) -> Callable[..., Settings]:
    def build(*issuers: dict[str, Any]) -> Settings:
        from tests.hooks.helpers import BASE_URL, PUBLIC_URL

        return Settings().replace(
            database__url=db_url,
            server__public_url=PUBLIC_URL,
            cds_hooks={
                "base_url": BASE_URL,
                "time_budget_ms": 5000,
                "trusted_issuers": list(issuers),
            },
        )

    return build


def test_rsa_jwk_without_alg_accepts_rs384(
    keys: Keys, tmp_path: Path, issuer_settings: Callable[..., Settings]
) -> None:
    """RFC 7517 makes ``alg`` OPTIONAL; PyJWT gives such an RSA key RS256."""
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(keys.rsa.public_key()))
    rsa_jwk.update(kid="rsa-no-alg", use="sig")
    assert "alg" not in rsa_jwk
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk]}), encoding="utf-8")
    app = _app(issuer_settings({"iss": ISS, "jwks_file": str(path)}))
    try:
        tok = _token(keys.rsa, "RS384", "rsa-no-alg", service_url(PV))
        resp = _call(app, tok)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        # the key type is still checked: an EC signature named with this RSA kid fails
        bad = _token(keys.ec, "ES384", "rsa-no-alg", service_url(PV))
        assert _call(app, bad).status_code == 401
    finally:
        _close(app)


def test_the_configured_file_wins_over_an_allow_listed_jku(
    keys: Keys,
    jwks_file: Path,
    jwks_http: JwksServer,
    issuer_settings: Callable[..., Settings],
) -> None:
    """An issuer with a jwks_file verifies offline: its tokens' jku is never fetched."""
    app = _app(
        issuer_settings({"iss": ISS, "jwks_file": str(jwks_file), "jku_allowed": [jwks_http.url]})
    )
    try:
        tok = _token(keys.ec, "ES384", "ec-1", service_url(PV), jku=jwks_http.url)
        assert _call(app, tok).status_code == 200
        assert jwks_http.hits == 0
    finally:
        _close(app)


def test_algorithms_are_chosen_per_issuer(
    tmp_path: Path, issuer_settings: Callable[..., Settings], keys: Keys, jwks_file: Path
) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(p256.public_key()))
    jwk.update(kid="p256", alg="ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    app = _app(
        issuer_settings(
            {"iss": ISS, "jwks_file": str(path), "algorithms": ["ES256"]},
            {"iss": "https://other.example", "jwks_file": str(jwks_file)},
        )
    )
    try:
        assert _call(app, _token(p256, "ES256", "p256", service_url(PV))).status_code == 200
        # the default issuer keeps ES384/RS384 only
        other = _token(p256, "ES256", "p256", service_url(PV), iss="https://other.example")
        resp = _call(app, other)
        assert resp.status_code == 401 and "not accepted for issuer" in resp.get_json()["message"]
    finally:
        _close(app)


@pytest.mark.parametrize("alg", ["HS256", "none", "EdDSA"])
def test_symmetric_or_unknown_algorithms_cannot_be_configured(tmp_path: Path, alg: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        f'[[cds_hooks.trusted_issuers]]\niss = "https://e.example"\nalgorithms = ["{alg}"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"trusted_issuers\[0\]\.algorithms\[0\]. must be one of"):
        load_settings(p, environ={})


def test_a_hanging_jwks_stalls_neither_other_issuers_nor_its_own_callers(
    jwks_http: JwksServer, jwks_file: Path
) -> None:
    """One source hangs: another source answers at once, and after the first failure the
    hanging one is not asked again for ``failure_ttl_s`` (its callers fail fast)."""
    jwks_http.mode, jwks_http.hang_s = "hang", 2.0
    store = JwksStore(timeout_s=0.6, failure_ttl_s=30.0)
    errors: list[Exception] = []

    def hanging_caller() -> None:
        try:
            store.key(jwks_http.url, "ec-1")
        except Unauthorized as exc:
            errors.append(exc)

    slow = threading.Thread(target=hanging_caller)
    slow.start()
    time.sleep(0.1)  # the slow fetch is under way
    t0 = time.monotonic()
    assert store.key(str(jwks_file), "ec-1").jwk.key_id == "ec-1"
    assert time.monotonic() - t0 < 0.3  # before: queued behind the hanging fetch
    slow.join()
    assert len(errors) == 1
    t0 = time.monotonic()
    for _ in range(4):
        with pytest.raises(Unauthorized, match="recent failure"):
            store.key(jwks_http.url, "ec-1")
    assert time.monotonic() - t0 < 0.3
    assert jwks_http.hits == 1


def test_the_last_good_key_set_is_served_when_a_refresh_fails(jwks_http: JwksServer) -> None:
    store = JwksStore(ttl_s=0.0, timeout_s=1.0)
    assert store.key(jwks_http.url, "ec-1").jwk.key_id == "ec-1"
    jwks_http.mode = "error"
    time.sleep(0.01)
    assert store.key(jwks_http.url, "ec-1").jwk.key_id == "ec-1"  # stale, not a 401
    assert jwks_http.hits == 2
