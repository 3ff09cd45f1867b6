"""The token half of the SMART EHR launch: client authentication, the id_token, the context.

* Client authentication at the token endpoint: a public client sends only its
  ``client_id`` (and the PKCE verifier); a confidential asymmetric client
  (``server.smart_client_auth = "private_key_jwt"``, SMART App Launch 2.x "Client
  Authentication: Asymmetric") adds ``client_assertion_type`` and a ``client_assertion`` JWT
  signed with ``server.smart_private_key_file`` (RS384 or ES384).
* The ``id_token`` (OpenID Connect Core 3.1.3.7, as profiled by SMART "Scopes for
  requesting identity data"): its ``iss`` must be the OpenID issuer the server names in its
  smart-configuration (``issuer``), not the FHIR base URL; keys come from that document's
  ``jwks_uri``; ``aud`` is our client id.  When ``openid`` was asked, an answer without an
  id_token is refused.
* The launch context beyond ``patient``: ``fhirContext`` (SMART 2.1 objects with
  ``reference``, or SMART 2.0 reference strings) and ``appContext`` (the string a CDS card's
  smart link carried through the EHR; ours is JSON naming the card).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import jwt

from cds.config import ServerSettings
from cds.inbox.errors import SmartLaunchError
from connectors.errors import FhirAuthError
from connectors.fhir.jwks import (
    ASSERTION_TYPE,
    load_private_key,
    public_jwk,
    sign_client_assertion,
)

log = logging.getLogger("mprtm.inbox.smart")

HTTP_TIMEOUT_S = 10.0
ID_TOKEN_ALGS = ["RS256", "RS384", "ES256", "ES384"]
REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")  # used with fullmatch
MAX_FHIR_CONTEXT = 10
MAX_APP_CONTEXT_CHARS = 2000
CARD_UUID = re.compile(r"[A-Za-z0-9\-]{1,64}")  # used with fullmatch


def wants_openid(scope: str) -> bool:
    return "openid" in scope.split()


def client_auth(server: ServerSettings, token_url: str) -> dict[str, str]:
    """The form fields that authenticate the inbox at ``token_url``.

    Raises:
        SmartLaunchError: (503) private_key_jwt is configured but the key is unusable.
    """
    form = {"client_id": server.smart_client_id}
    if server.smart_client_auth != "private_key_jwt":
        return form
    if not server.smart_private_key_file:
        raise SmartLaunchError(
            "token: server.smart_client_auth is private_key_jwt but "
            "server.smart_private_key_file is not set",
            503,
        )
    try:
        key = load_private_key(server.smart_private_key_file, server.smart_key_alg)
    except FhirAuthError as exc:
        raise SmartLaunchError(f"token: server.smart_private_key_file: {exc}", 503) from None
    kid = server.smart_key_id or str(public_jwk(key, server.smart_key_alg)["kid"])
    form["client_assertion_type"] = ASSERTION_TYPE
    form["client_assertion"] = sign_client_assertion(
        key, server.smart_key_alg, kid, client_id=server.smart_client_id, token_url=token_url
    )
    return form


def check_discovery(iss: str, config: dict[str, Any], server: ServerSettings) -> None:
    """What the smart-configuration must hold for the configured scope and client auth.

    Raises:
        SmartLaunchError: (502) ``issuer``/``jwks_uri`` missing while ``openid`` is asked,
            or the server does not offer our client authentication method or algorithm.
    """
    if wants_openid(server.smart_scope):
        for key in ("issuer", "jwks_uri"):
            value = config.get(key)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise SmartLaunchError(
                    f"smart-configuration of {iss}: '{key}' missing or not a URL "
                    "(required for 'openid' in server.smart_scope)",
                    502,
                )
    if server.smart_client_auth == "private_key_jwt":
        methods = config.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise SmartLaunchError(
                f"smart-configuration of {iss}: private_key_jwt is not among "
                "token_endpoint_auth_methods_supported",
                502,
            )
        algs = config.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algs, list) and server.smart_key_alg not in algs:
            raise SmartLaunchError(
                f"smart-configuration of {iss}: {server.smart_key_alg} is not among "
                "token_endpoint_auth_signing_alg_values_supported",
                502,
            )


def verify_id_token(pending: dict[str, Any], token: dict[str, Any], client_id: str) -> str | None:
    """The user named by the id_token (``fhirUser``, else ``sub``); None when none was asked
    for and none came.

    Raises:
        SmartLaunchError: (502) missing while ``openid`` was asked, or not valid.
    """
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        if pending.get("openid"):
            raise SmartLaunchError("token: 'openid' was asked but no id_token came", 502)
        return None
    issuer = str(pending.get("oidc_issuer") or "")
    jwks_uri = str(pending.get("jwks_uri") or "")
    if not issuer or not jwks_uri:
        raise SmartLaunchError(
            "token: an id_token came but the smart-configuration names no issuer and jwks_uri",
            502,
        )
    try:
        key = jwt.PyJWKClient(jwks_uri, timeout=int(HTTP_TIMEOUT_S)).get_signing_key_from_jwt(
            id_token
        )
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=ID_TOKEN_ALGS,
            audience=client_id,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise SmartLaunchError(f"token: id_token rejected ({type(exc).__name__})", 502) from None
    return str(claims.get("fhirUser") or claims["sub"])[:90]


def fhir_context(token: dict[str, Any]) -> list[str]:
    """Relative references of ``fhirContext`` (other than the patient), at most ten.

    SMART 2.1 sends objects (``{"reference": "Encounter/1", "role": ...}``), 2.0 sent
    strings; both are read.  Anything else (canonical or identifier-only entries, absolute
    or malformed references) is skipped and logged by count.
    """
    raw = token.get("fhirContext")
    if not isinstance(raw, list):
        return []
    refs: list[str] = []
    skipped = 0
    for item in raw[:50]:
        ref = item.get("reference") if isinstance(item, dict) else item
        if isinstance(ref, str) and REFERENCE.fullmatch(ref) and not ref.startswith("Patient/"):
            if ref not in refs and len(refs) < MAX_FHIR_CONTEXT:
                refs.append(ref)
        else:
            skipped += 1
    if skipped:
        log.info("SMART launch: %d fhirContext entries without a usable reference", skipped)
    return refs


def app_context_card(token: dict[str, Any], patient: str) -> str | None:
    """The card uuid of our own appContext (see :mod:`cds.hooks.cards`) when it is about the
    launched patient; None for an absent, foreign or mismatched appContext."""
    raw = token.get("appContext")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_APP_CONTEXT_CHARS:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        log.info("SMART launch: appContext is not JSON; ignored")
        return None
    if not isinstance(data, dict):
        return None
    if data.get("patientId") != patient:
        log.warning("SMART launch: appContext names another patient than the launch; ignored")
        return None
    card = data.get("cardUuid")
    return card if isinstance(card, str) and CARD_UUID.fullmatch(card) else None
