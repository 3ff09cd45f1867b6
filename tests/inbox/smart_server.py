"""A TEST authorization server for SMART App Launch (EHR launch) — not for production.

It follows the SMART App Launch 2.x specification (HL7 FHIR IG
http://hl7.org/fhir/smart-app-launch/) for the parts an EHR-launched public client or
confidential asymmetric client uses, plus RFC 6749 (authorization code grant), RFC 7636
(PKCE, S256 only), RFC 7523 (``private_key_jwt`` client assertions) and OpenID Connect Core
for the ``id_token``:

* ``GET <fhir>/.well-known/smart-configuration``: the discovery document.  Its OpenID
  ``issuer`` is ``<base>/auth``, not the FHIR base URL (as at EHRs whose identity provider
  is apart from the FHIR server), and id_tokens carry that ``iss``.
* ``GET /auth/authorize``: checks ``response_type=code``, a registered ``client_id`` and its
  exact ``redirect_uri``, a ``launch`` id issued by :meth:`SmartTestServer.new_launch`,
  ``aud`` equal to the FHIR base URL, a ``state`` and an S256 ``code_challenge``.  Errors
  about the client or redirect URI are answered here (never redirected, RFC 6749
  4.1.2.1); other errors are redirected with ``error`` and ``state``.  On success it
  redirects with a one-time ``code`` (the user "approves" at once).
* ``POST /auth/token``: ``grant_type=authorization_code``; the code is single-use and
  must match ``client_id``, ``redirect_uri`` and ``code_verifier`` (SHA-256, base64url).
  When a client key is registered (:attr:`SmartTestServer.client_jwk`) the request must
  carry a ``client_assertion`` it verifies (RS384/ES384, ``kid``, ``iss`` = ``sub`` = client
  id, ``aud`` = the token URL, ``exp`` at most five minutes ahead, ``jti`` used once), else
  ``401 invalid_client``.  The answer carries ``access_token``, ``token_type``,
  ``expires_in``, ``scope``, the launch context ``patient`` (plus ``fhirContext`` and
  ``appContext`` when the launch has them) and, when ``openid`` was asked, an RS256
  ``id_token`` with ``fhirUser`` (unless :attr:`SmartTestServer.send_id_token` is off).
* ``GET /auth/jwks``: the public key that verifies the ``id_token``.

It runs in a thread on a free localhost port (see :mod:`tests.inbox.browser`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, request


@dataclass
class SmartTestServer:
    """State of the test authorization server.

    Args:
        client_id: the registered public client.
        redirect_uri: its one registered redirect URI.
        practitioner: the ``fhirUser`` put in id_tokens.
    """

    client_id: str
    redirect_uri: str
    practitioner: str = "Practitioner/dr-test"
    base_url: str = ""
    send_id_token: bool = True
    client_jwk: dict[str, Any] | None = None
    launches: dict[str, dict[str, Any]] = field(default_factory=dict)
    assertion_ids: set[str] = field(default_factory=set)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/auth"

    def new_launch(
        self, patient: str, *, app_context: str = "", fhir_context: list[Any] | None = None
    ) -> str:
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = {
            "patient": patient,
            "appContext": app_context,
            "fhirContext": fhir_context,
        }
        return launch

    def client_error(self, form: Any) -> str:
        """Why the client assertion of a token request is refused ("" when it is good)."""
        if self.client_jwk is None:
            return ""
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return "no client assertion"
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("kid") != self.client_jwk["kid"]:
                return "unknown kid"
            key = jwt.PyJWK(self.client_jwk).key
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS384", "ES384"],
                audience=f"{self.base_url}/auth/token",
                issuer=self.client_id,
                options={"require": ["exp", "jti", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return type(exc).__name__
        if claims["sub"] != self.client_id or claims["exp"] > time.time() + 300:
            return "bad sub or exp"
        if claims["jti"] in self.assertion_ids:
            return "jti replayed"
        self.assertion_ids.add(claims["jti"])
        return ""

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def id_token(self, sub: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "fhirUser": self.practitioner,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def app(self) -> Flask:
        app = Flask("smart-test-server")

        @app.get("/fhir/.well-known/smart-configuration")
        def configuration() -> Any:
            return jsonify(
                issuer=self.issuer,
                authorization_endpoint=f"{self.base_url}/auth/authorize",
                token_endpoint=f"{self.base_url}/auth/token",
                jwks_uri=f"{self.base_url}/auth/jwks",
                grant_types_supported=["authorization_code"],
                code_challenge_methods_supported=["S256"],
                token_endpoint_auth_methods_supported=["none", "private_key_jwt"],
                token_endpoint_auth_signing_alg_values_supported=["RS384", "ES384"],
                scopes_supported=["launch", "openid", "fhirUser", "patient/*.rs"],
                response_types_supported=["code"],
                capabilities=[
                    "launch-ehr",
                    "client-public",
                    "client-confidential-asymmetric",
                    "context-ehr-patient",
                    "sso-openid-connect",
                    "permission-v2",
                ],
            )

        @app.get("/auth/jwks")
        def keys() -> Any:
            return jsonify(self.jwks())

        @app.get("/auth/authorize")
        def authorize() -> Any:
            q = request.args
            self.authorize_requests.append(dict(q))
            if q.get("client_id") != self.client_id or q.get("redirect_uri") != self.redirect_uri:
                return Response("unknown client or redirect_uri", status=400)
            state = q.get("state", "")

            def error(code: str) -> Any:
                return redirect(
                    self.redirect_uri + "?" + urlencode({"error": code, "state": state})
                )

            if q.get("response_type") != "code":
                return error("unsupported_response_type")
            if not state or q.get("aud") != self.fhir_base:
                return error("invalid_request")
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                return error("invalid_request")
            context = self.launches.get(q.get("launch", ""))
            if context is None or "launch" not in q.get("scope", "").split():
                return error("access_denied")
            code = secrets.token_urlsafe(24)
            self.codes[code] = {
                "challenge": q["code_challenge"],
                "context": context,
                "scope": q.get("scope", ""),
                "at": time.time(),
            }
            return redirect(self.redirect_uri + "?" + urlencode({"code": code, "state": state}))

        @app.post("/auth/token")
        def token() -> Any:
            f = request.form
            self.token_requests.append(dict(f))

            def fail(code: str) -> Any:
                resp = jsonify(error=code)
                resp.status_code = 400
                return resp

            if f.get("grant_type") != "authorization_code":
                return fail("unsupported_grant_type")
            grant = self.codes.pop(f.get("code", ""), None)  # single use
            if grant is None or time.time() - grant["at"] > 60:
                return fail("invalid_grant")
            if f.get("client_id") != self.client_id or f.get("redirect_uri") != self.redirect_uri:
                return fail("invalid_grant")
            why = self.client_error(f)
            if why:
                resp = jsonify(error="invalid_client", error_description=why)
                resp.status_code = 401
                return resp
            digest = hashlib.sha256(f.get("code_verifier", "").encode("ascii")).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                return fail("invalid_grant")
            body: dict[str, Any] = {
                "access_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": grant["scope"],
                "patient": grant["context"]["patient"],
            }
            if grant["context"]["appContext"]:
                body["appContext"] = grant["context"]["appContext"]
            if grant["context"]["fhirContext"] is not None:
                body["fhirContext"] = grant["context"]["fhirContext"]
            if self.send_id_token and "openid" in grant["scope"].split():
                body["id_token"] = self.id_token("user-123")
            resp = jsonify(body)
            resp.headers["Cache-Control"] = "no-store"
            return resp

        return app
