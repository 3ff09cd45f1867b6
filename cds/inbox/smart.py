"""SMART App Launch, EHR launch (SMART App Launch 2.x, authorization code with PKCE).

1. The EHR opens ``/inbox/launch?launch=...&iss=...`` (a CDS card's ``smart`` link, or a
   patient page URL with those two parameters).
2. ``iss`` must be one of ``server.smart_issuers`` (otherwise anyone could run an
   authorization server that "launches" us into any patient).  We read
   ``<iss>/.well-known/smart-configuration`` for the authorization and token endpoints.
3. We redirect to the authorization endpoint with ``response_type=code``, our
   ``client_id`` (``server.smart_client_id``), ``redirect_uri`` =
   ``<server.public_url>/inbox/callback``, the ``launch`` value, ``scope``
   (``server.smart_scope``), ``aud`` = ``iss``, a random ``state`` and a PKCE S256
   ``code_challenge``.  State and verifier are kept in the (signed) session.
4. ``/inbox/callback`` checks ``state``, exchanges the code (with the ``code_verifier``;
   a confidential client adds its signed client assertion) at the token endpoint and reads
   the launch context: ``patient`` is required, ``fhirContext`` and ``appContext`` are kept.
   The ``id_token`` (required when ``openid`` was asked) is verified against the
   smart-configuration's ``jwks_uri`` (audience = our client id, issuer = its OpenID
   ``issuer``) and its ``fhirUser`` (else ``sub``) names the user in the audit trail.
   Details in :mod:`cds.inbox._smart_token`.
5. The new session is bound to that patient only; the access token is not kept (the
   inbox reads its own database, not the EHR's FHIR server).  Then the patient page (at the
   card's alert list when the appContext named one of our cards).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from flask import Blueprint, redirect, render_template, request, session, url_for

from cds.inbox._db import settings
from cds.inbox._smart_token import (
    app_context_card,
    check_discovery,
    client_auth,
    fhir_context,
    verify_id_token,
    wants_openid,
)
from cds.inbox.auth import start_session
from cds.inbox.errors import SmartLaunchError

log = logging.getLogger("mprtm.inbox.smart")

bp = Blueprint("smart", __name__, url_prefix="/inbox")

PENDING_KEY = "smart_pending"
PENDING_TTL_S = 600
MAX_PENDING = 4
HTTP_TIMEOUT_S = 10.0
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # used with fullmatch


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


def redirect_uri() -> str:
    return _norm(settings().server.public_url) + "/inbox/callback"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _get_json(client: httpx.Client, url: str, what: str) -> dict[str, Any]:
    try:
        resp = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SmartLaunchError(f"{what}: cannot reach {url} ({type(exc).__name__})", 502) from None
    if resp.status_code != 200:
        raise SmartLaunchError(f"{what}: {url} answered HTTP {resp.status_code}", 502)
    try:
        data = resp.json()
    except ValueError:
        raise SmartLaunchError(f"{what}: {url} did not return JSON", 502) from None
    if not isinstance(data, dict):
        raise SmartLaunchError(f"{what}: {url} did not return a JSON object", 502)
    return data


def discover(iss: str) -> dict[str, Any]:
    """The issuer's SMART configuration, with the endpoints this flow needs checked."""
    url = _norm(iss) + "/.well-known/smart-configuration"
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        config = _get_json(client, url, "smart-configuration")
    for key in ("authorization_endpoint", "token_endpoint"):
        value = config.get(key)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise SmartLaunchError(
                f"smart-configuration of {iss}: '{key}' missing or not a URL", 502
            )
    methods = config.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise SmartLaunchError(f"smart-configuration of {iss}: PKCE S256 not supported", 502)
    return config


@bp.get("/launch")
def launch() -> Any:
    server = settings().server
    iss = request.args.get("iss", "")
    launch_id = request.args.get("launch", "")
    if not iss or not launch_id:
        if server.demo_login:  # the local demo: the card's link goes through the demo log-in
            patient = request.args.get("patient", "")
            target = (
                url_for("inbox.patient", fhir_id=patient)
                if FHIR_ID.fullmatch(patient)
                else url_for("inbox.index")
            )
            return redirect(url_for("auth.login", next=target))
        return _fail(SmartLaunchError("launch: the 'launch' and 'iss' parameters are required"))
    try:
        if not server.smart_client_id:
            raise SmartLaunchError("launch: server.smart_client_id is not configured", 503)
        if _norm(iss) not in {_norm(i) for i in server.smart_issuers}:
            raise SmartLaunchError(
                f"launch: issuer {iss[:200]} is not in server.smart_issuers", 403
            )
        config = discover(iss)
        check_discovery(iss, config, server)
    except SmartLaunchError as exc:
        return _fail(exc)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    pending = [
        p
        for p in session.get(PENDING_KEY, [])
        if isinstance(p, dict) and time.time() - float(p.get("at", 0)) < PENDING_TTL_S
    ][-(MAX_PENDING - 1) :]
    pending.append(
        {
            "state": state,
            "verifier": verifier,
            "iss": _norm(iss),
            "at": time.time(),
            "token_endpoint": config["token_endpoint"],
            "jwks_uri": config.get("jwks_uri") or "",
            "oidc_issuer": config.get("issuer") or "",
            "openid": wants_openid(server.smart_scope),
        }
    )
    session[PENDING_KEY] = pending
    params = {
        "response_type": "code",
        "client_id": server.smart_client_id,
        "redirect_uri": redirect_uri(),
        "launch": launch_id,
        "scope": server.smart_scope,
        "state": state,
        "aud": iss,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = config["authorization_endpoint"]
    sep = "&" if "?" in endpoint else "?"
    log.info("SMART launch: redirecting to the authorization endpoint of %s", _norm(iss))
    return redirect(endpoint + sep + urlencode(params))


def _take_pending(state: str) -> dict[str, Any]:
    pending = session.get(PENDING_KEY, [])
    found = None
    keep = []
    for p in pending if isinstance(pending, list) else []:
        if not isinstance(p, dict):
            continue
        if found is None and hmac.compare_digest(str(p.get("state", "")).encode(), state.encode()):
            found = p
        else:
            keep.append(p)
    session[PENDING_KEY] = keep
    if found is None:
        raise SmartLaunchError("callback: unknown or reused state; start the launch again")
    if time.time() - float(found.get("at", 0)) > PENDING_TTL_S:
        raise SmartLaunchError("callback: the launch took too long; start it again")
    return found


def _exchange(pending: dict[str, Any], code: str) -> dict[str, Any]:
    server = settings().server
    url = pending["token_endpoint"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(),
        "code_verifier": pending["verifier"],
        **client_auth(server, url),
    }
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            resp = client.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SmartLaunchError(f"token: cannot reach {url} ({type(exc).__name__})", 502) from None
    if resp.status_code != 200:
        error = ""
        try:
            error = str(resp.json().get("error", ""))[:60]
        except ValueError:
            pass
        raise SmartLaunchError(
            f"token: {url} refused the code (HTTP {resp.status_code} {error})", 502
        )
    try:
        data = resp.json()
    except ValueError:
        raise SmartLaunchError(f"token: {url} did not return JSON", 502) from None
    if not isinstance(data, dict) or not data.get("access_token"):
        raise SmartLaunchError(f"token: {url} returned no access_token", 502)
    return data


@bp.get("/callback")
def callback() -> Any:
    try:
        if request.args.get("error"):
            error = re.sub(r"[^A-Za-z0-9_.\-]", "", request.args["error"])[:60]
            raise SmartLaunchError(f"authorize: the EHR refused the launch ({error})", 403)
        state = request.args.get("state", "")
        code = request.args.get("code", "")
        if not state or not code:
            raise SmartLaunchError("callback: 'code' and 'state' are required")
        pending = _take_pending(state)
        token = _exchange(pending, code)
        patient = token.get("patient")
        if not isinstance(patient, str) or not FHIR_ID.fullmatch(patient):
            raise SmartLaunchError("token: the launch context has no valid 'patient'", 502)
        actor = verify_id_token(pending, token, settings().server.smart_client_id)
    except SmartLaunchError as exc:
        return _fail(exc)
    context = fhir_context(token)
    card = app_context_card(token, patient)
    start_session(
        smart={
            "patient": patient,
            "actor": actor or "ehr-user",
            "iss": pending["iss"],
            "context": " ".join(context),
            "card": card or "",
        }
    )
    log.info(
        "SMART launch complete for patient %s from %s (context: %s; card: %s)",
        patient,
        pending["iss"],
        ", ".join(context) or "none",
        card or "none",
    )
    target = url_for("inbox.patient", fhir_id=patient)
    return redirect(target + ("#alerts-h" if card else ""))


def _fail(exc: SmartLaunchError) -> Any:
    log.warning("SMART launch failed: %s", exc)
    return render_template(
        "inbox/error.html", code=exc.status, title="EHR launch failed", message=str(exc)
    ), exc.status
