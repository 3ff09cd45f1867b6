"""Credentials for FHIR requests: static bearer token and SMART Backend Services.

SMART Backend Services (HL7 SMART App Launch 2.x, "Backend Services"): the client posts
``grant_type=client_credentials`` with a ``client_assertion`` JWT signed by its private
key (RS384 or ES384; header ``kid``, ``typ=JWT``; claims ``iss`` = ``sub`` = client id,
``aud`` = token endpoint URL, ``exp`` at most five minutes ahead, a unique ``jti``) and
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``.  The
access token is cached and fetched again shortly before it expires or after a 401.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from connectors.errors import FhirAuthError, FhirError, ResourceNotFound
from connectors.fhir.jwks import (
    ASSERTION_TYPE,
    PrivateKey,
    load_private_key,
    public_jwk,
    sign_client_assertion,
)

if TYPE_CHECKING:
    from connectors.fhir._http import FhirHttp

log = logging.getLogger("connectors.fhir.auth")

__all__ = ["ASSERTION_TYPE", "BearerAuth", "SmartBackendAuth"]


class BearerAuth:
    """A fixed bearer token (``fhir.auth = "bearer"``).

    Args:
        token: the access token (from ``MPRTM_FHIR__BEARER_TOKEN``).
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise FhirAuthError("auth 'bearer' needs a token (MPRTM_FHIR__BEARER_TOKEN)")
        self._token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        return False


class SmartBackendAuth:
    """SMART Backend Services client (client_credentials + private_key_jwt).

    Args:
        http: the FHIR server's :class:`FhirHttp` (used to call the token endpoint with the
            same retries and timeouts, and for discovery).
        client_id: id registered with the authorization server.
        private_key: PEM private key file path or a loaded key.
        alg: "RS384" or "ES384".
        scope: scopes asked for (e.g. ``system/*.rs``).
        token_url: token endpoint; empty = discovered from
            ``{base}/.well-known/smart-configuration``.
        key_id: ``kid`` header; empty = the key's RFC 7638 thumbprint.
        refresh_margin_s: fetch a new token this many seconds before the old one expires.
    """

    def __init__(
        self,
        http: FhirHttp,
        *,
        client_id: str,
        private_key: str | PrivateKey,
        alg: str = "RS384",
        scope: str = "system/*.rs",
        token_url: str = "",
        key_id: str = "",
        refresh_margin_s: float = 60.0,
    ) -> None:
        if not client_id:
            raise FhirAuthError("auth 'smart-backend' needs fhir.client_id")
        if not private_key:
            raise FhirAuthError("auth 'smart-backend' needs fhir.private_key_file")
        self._http = http
        self.client_id = client_id
        self.alg = alg
        self.scope = scope
        self._key = (
            load_private_key(private_key, alg) if isinstance(private_key, str) else private_key
        )
        self.key_id = key_id or str(public_jwk(self._key, alg)["kid"])
        self._token_url = token_url
        self.refresh_margin_s = refresh_margin_s
        self._lock = threading.Lock()
        self._token = ""
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self.tokens_fetched = 0

    @property
    def token_url(self) -> str:
        if not self._token_url:
            self._token_url = self._discover()
        return self._token_url

    def _discover(self) -> str:
        """Token endpoint from ``.well-known/smart-configuration``, else from the
        CapabilityStatement's ``oauth-uris`` extension (older SMART servers)."""
        url: Any = None
        try:
            resp = self._http.request(
                "GET",
                ".well-known/smart-configuration",
                headers={"Accept": "application/json"},
                use_auth=False,
                what="SMART configuration discovery",
            )
            url = self._http.decode(resp, "SMART configuration discovery").get("token_endpoint")
        except (ResourceNotFound, FhirAuthError):  # absent (some servers answer 401)
            resp = self._http.request("GET", "metadata", use_auth=False, what="GET metadata")
            cap = self._http.decode(resp, "CapabilityStatement")
            for rest in cap.get("rest") or []:
                for ext in (rest.get("security") or {}).get("extension") or []:
                    if str(ext.get("url", "")).endswith("/oauth-uris"):
                        for sub in ext.get("extension") or []:
                            if sub.get("url") == "token":
                                url = sub.get("valueUri")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise FhirAuthError(
                "no token endpoint in .well-known/smart-configuration or the "
                "CapabilityStatement; set fhir.token_url"
            )
        return url

    def client_assertion(self) -> str:
        """A freshly signed client assertion JWT (unique jti, exp in five minutes)."""
        return sign_client_assertion(
            self._key, self.alg, self.key_id, client_id=self.client_id, token_url=self.token_url
        )

    def _fetch(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        token_url = self.token_url
        try:
            resp = self._http.request_token(token_url, form)
        except FhirError as exc:
            raise FhirAuthError(f"SMART token request failed: {exc}", status=exc.status) from None
        body: dict[str, Any] = self._http.decode(resp, "token endpoint")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise FhirAuthError("token endpoint answered without an access_token")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise FhirAuthError(f"token endpoint gave token_type {body.get('token_type')!r}")
        expires_in = float(body.get("expires_in") or 300)
        self._token = token
        self._expires_at = time.monotonic() + expires_in
        self._refresh_at = self._expires_at - min(self.refresh_margin_s, 0.2 * expires_in)
        self.tokens_fetched += 1
        log.info(
            "SMART backend token obtained for client %s (expires in %.0fs)",
            self.client_id,
            expires_in,
        )

    def headers(self) -> dict[str, str]:
        with self._lock:
            if not self._token or time.monotonic() >= self._refresh_at:
                self._fetch()
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        with self._lock:
            self._token = ""
            self._expires_at = self._refresh_at = 0.0
        return True
