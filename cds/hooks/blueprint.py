"""HTTP endpoints of the CDS Hooks service (a Flask blueprint).

``GET /cds-services`` (discovery), ``POST /cds-services/{id}`` (a hook call),
``POST /cds-services/{id}/feedback``, and CORS preflight (``OPTIONS``) on each.  Errors are
answered in one place as ``{"error": code, "message": text}`` with the status of the
:class:`~cds.hooks.errors.HooksError` raised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from cds.audit import audit, hook_call_event
from cds.canonical import canonical
from cds.config import Settings
from cds.hooks.engine import HooksEngine
from cds.hooks.errors import BadHookRequest, HooksError, UnknownService
from cds.hooks.feedback import parse_feedback
from cds.hooks.openapi import bp as openapi_bp
from cds.hooks.request import parse_hook_request, refuse_fhir_access
from cds.hooks.scoring import OnDemandScorer
from cds.hooks.security import JwtVerifier, ReplayCache
from cds.hooks.services import discovery_document, service_by_id
from cds.hooks.store import store_feedback
from connectors.fhir.outbound import OriginPolicy

log = logging.getLogger("mprtm.hooks")

EXTENSION = "mprtm.hooks"
#: Deepest nesting of a request body (FHIR resources nest far less).
MAX_JSON_DEPTH = 64
bp = Blueprint("cds_hooks", __name__)


@dataclass
class HooksState:
    """Per-application state: settings, the engine, the JWT verifier (None: JWT off) and
    the FHIR origin policy of each trusted issuer ("" when JWT is off: the union)."""

    settings: Settings
    engine: HooksEngine
    verifier: JwtVerifier | None
    fhir_policies: dict[str, OriginPolicy]


def _state() -> HooksState:
    state: HooksState = current_app.extensions[EXTENSION]
    return state


def _base() -> str:
    return _state().settings.cds_hooks.base_url.rstrip("/") + "/cds-services"


def _authorize(*audiences: str) -> str:
    """Verify the caller's JWT; returns its issuer ("" when JWT is off)."""
    verifier = _state().verifier
    if verifier is None:
        return ""
    claims = verifier.verify(request.headers.get("Authorization"), audiences)
    return str(claims["iss"])


def fhir_policies(settings: Settings) -> dict[str, OriginPolicy]:
    """The origin policy of each trusted issuer, and under "" the union of their
    ``fhir_servers`` (used when JWT verification is off)."""
    hooks = settings.cds_hooks
    out: dict[str, OriginPolicy] = {}
    every: list[str] = []
    for issuer in hooks.trusted_issuers:
        every.extend(issuer.fhir_servers)
        out[issuer.iss] = OriginPolicy(
            allowed=issuer.fhir_servers,
            allow_http=hooks.allow_http_fhir_server,
            internal_allowed=hooks.internal_fhir_servers,
        )
    out[""] = OriginPolicy(
        allowed=tuple(every),
        allow_http=hooks.allow_http_fhir_server,
        internal_allowed=hooks.internal_fhir_servers,
    )
    return out


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    if not raw:
        raise BadHookRequest("the request has no body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadHookRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise BadHookRequest(f"the request body nests deeper than {MAX_JSON_DEPTH}") from None
    check_json(body)
    return body


def check_json(body: Any) -> None:
    """Refuse bodies nested deeper than :data:`MAX_JSON_DEPTH` or holding a NUL character
    (no database column can store one); the error names where (a JSON path)."""
    stack: list[tuple[Any, str, int]] = [(body, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadHookRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} at {path}")
        if isinstance(value, str):
            if "\x00" in value:
                raise BadHookRequest(f"{path} contains a NUL character")
        elif isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    raise BadHookRequest(f"{path} has a key with a NUL character")
                stack.append((v, f"{path}.{k[:40]}", depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def _preflight() -> Response:
    return Response(status=204)


@bp.route("/cds-services", methods=["GET", "OPTIONS"])
def discovery() -> Any:
    if request.method == "OPTIONS":
        return _preflight()
    _authorize(_base())
    return jsonify(discovery_document())


@bp.route("/cds-services/<service_id>", methods=["POST", "OPTIONS"])
def call_service(service_id: str) -> Any:
    if request.method == "OPTIONS":
        return _preflight()
    iss = _authorize(f"{_base()}/{service_id}")
    service = service_by_id(service_id)
    if service is None:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    req = parse_hook_request(_json_body(), service)
    state = _state()
    refused = refuse_fhir_access(req, state.fhir_policies.get(iss) or OriginPolicy())
    if refused is not None:
        log.warning(
            "fhirServer refused for issuer %s (patient=%s): %s; answering without FHIR access",
            iss or "<jwt off>",
            req.patient_id,
            refused,
        )
    answer = state.engine.handle(service, req)
    audit(
        hook_call_event(
            service_id=service_id, patient_id=req.patient_id, iss=iss, outcome="success"
        )
    )
    return jsonify(answer)


@bp.route("/cds-services/<service_id>/feedback", methods=["POST", "OPTIONS"])
def feedback(service_id: str) -> Any:
    if request.method == "OPTIONS":
        return _preflight()
    url = f"{_base()}/{service_id}"
    _authorize(url, f"{url}/feedback")
    if service_by_id(service_id) is None:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    body = _json_body()
    engine = _state().engine
    engine.writer.flush()  # cards issued a moment ago are in the database
    with engine.sessions() as session:
        rows = parse_feedback(body, service_id, session, canonical(engine.settings).override_reason)
    n = store_feedback(engine.sessions, rows)
    log.info("feedback service=%s items=%d", service_id, n)
    return jsonify({"stored": n})


@bp.errorhandler(HooksError)
def _hooks_error(exc: HooksError) -> Any:
    if request.endpoint == "cds_hooks.call_service":
        audit(
            hook_call_event(
                service_id=str((request.view_args or {}).get("service_id")),
                patient_id=None,
                iss="",
                outcome="minor",
                detail=exc.code,
            )
        )
    resp = jsonify({"error": exc.code, "message": str(exc)})
    resp.status_code = exc.status
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        log.warning("401 on %s: %s", request.path, exc)
    return resp


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    """Werkzeug's own errors in these views (e.g. 413 body too large) as JSON too."""
    resp = jsonify(
        {"error": (exc.name or "error").lower().replace(" ", "-"), "message": exc.description or ""}
    )
    resp.status_code = exc.code or 500
    return resp


@bp.after_request
def _cors(resp: Response) -> Response:
    origin = request.headers.get("Origin")
    if not origin:
        return resp
    allowed = _state().settings.cds_hooks.cors_origins
    if "*" in allowed:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in allowed:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers.add("Vary", "Origin")
    else:
        return resp
    if request.method == "OPTIONS":
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        resp.headers["Access-Control-Max-Age"] = "600"
    return resp


def init_app(app: Flask, settings: Settings, scorer: OnDemandScorer | None = None) -> None:
    """Register the blueprint and its state on ``app`` (called by ``create_app``)."""
    hooks = settings.cds_hooks
    verifier: JwtVerifier | None = JwtVerifier(
        hooks, replay=ReplayCache(app.extensions["mprtm.sessions"])
    )
    if not hooks.require_jwt:
        log.warning(
            "cds_hooks.require_jwt is false: CDS Hooks calls are NOT authenticated "
            "(acceptable for a local demo only)"
        )
        verifier = None
    elif not hooks.trusted_issuers:
        log.warning("cds_hooks.trusted_issuers is empty: every CDS Hooks call will get 401")
    if scorer is None:
        from cds.hooks.model_scorer import default_scorer

        scorer = default_scorer(settings)
    engine = HooksEngine(settings, app.extensions["mprtm.sessions"], scorer)
    app.extensions[EXTENSION] = HooksState(
        settings=settings, engine=engine, verifier=verifier, fhir_policies=fhir_policies(settings)
    )
    app.register_blueprint(bp)
    app.register_blueprint(openapi_bp)  # GET /cds-services/openapi.json


def set_scorer(app: Flask, scorer: OnDemandScorer | None) -> None:
    """Replace the on-demand scorer of an application (tests, benchmarks)."""
    app.extensions[EXTENSION].engine.scorer = scorer
