"""``GET /.well-known/jwks.json``: the public keys of our SMART clients.

The EHR's authorization server verifies our client assertions with them (register this URL,
or the document it returns, with the EHR).  Only public halves are published: of
``fhir.private_key_file`` when ``fhir.auth = "smart-backend"`` (Backend Services) and of
``server.smart_private_key_file`` when ``server.smart_client_auth = "private_key_jwt"`` (the
inbox as a confidential asymmetric client).  With neither configured the endpoint answers 404.

``GET /fhir/CodeSystem/<name>``: the CodeSystem resources of the codes the service writes
(``outcome``, ``risk-tier``, ``model``), so that their canonical URLs under the default
base (``<server.public_url>/fhir``, :mod:`cds.canonical`) resolve.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from cds.batch.fhir_out import OUTCOME_CODES, TIER_DISPLAY
from cds.canonical import canonical
from cds.hooks.cards import OVERRIDE_REASONS, SUGGESTED_ORDERS
from connectors.errors import FhirAuthError
from connectors.fhir.jwks import public_jwks

log = logging.getLogger("mprtm.wellknown")

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Any:
    settings = current_app.extensions["mprtm.settings"]
    f, srv = settings.fhir, settings.server
    sources = []
    if f.auth == "smart-backend" and f.private_key_file:
        sources.append(("fhir.private_key_file", f.private_key_file, f.key_alg, f.key_id))
    if srv.smart_client_auth == "private_key_jwt" and srv.smart_private_key_file:
        sources.append(
            (
                "server.smart_private_key_file",
                srv.smart_private_key_file,
                srv.smart_key_alg,
                srv.smart_key_id,
            )
        )
    if not sources:
        resp = jsonify(error="not_found", error_description="no SMART client key is configured")
        return resp, 404
    keys: list[dict[str, Any]] = []
    for name, path, alg, kid in sources:
        try:
            jwk = public_jwks(path, alg, kid)["keys"][0]
        except FhirAuthError as exc:
            log.error("cannot publish the JWKS: %s", exc)
            return jsonify(
                error="unavailable",
                error_description=f"{name} is not usable; see the server log",
            ), 503
        if all(k["kid"] != jwk["kid"] for k in keys):
            keys.append(jwk)
    doc = {"keys": keys}
    resp = jsonify(doc)
    resp.headers["Cache-Control"] = "public, max-age=3600"
    resp.mimetype = "application/json"
    return resp


_CODESYSTEMS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "outcome": (
        "M-PRTM predicted outcomes",
        "complete",
        [(code, display) for code, (display, _) in OUTCOME_CODES.items()],
    ),
    "risk-tier": (
        "M-PRTM risk tiers (site thresholds on the predicted probability; not HL7 likelihoods)",
        "complete",
        list(TIER_DISPLAY.items()),
    ),
    "model": (
        "M-PRTM assessments and model names",
        "fragment",
        [("hf-1y-prognosis", "Heart-failure 1-year prognosis")],
    ),
    "card-topic": (
        "M-PRTM CDS Hooks card topics",
        "complete",
        [("hf-1y-risk", "Heart-failure risk")],
    ),
    "card-override-reason": (
        "M-PRTM CDS Hooks card override reasons",
        "complete",
        list(OVERRIDE_REASONS),
    ),
    "suggested-order": (
        "M-PRTM suggested orders",
        "complete",
        list(SUGGESTED_ORDERS.items()),
    ),
}


@bp.get("/fhir/CodeSystem/<name>")
def codesystem(name: str) -> Any:
    entry = _CODESYSTEMS.get(name)
    if entry is None:
        return jsonify(
            resourceType="OperationOutcome",
            issue=[{"severity": "error", "code": "not-found", "diagnostics": f"CodeSystem/{name}"}],
        ), 404
    title, content, concepts = entry
    url = canonical(current_app.extensions["mprtm.settings"]).base + f"/CodeSystem/{name}"
    resp = jsonify(
        resourceType="CodeSystem",
        id=name,
        url=url,
        name="Mprtm" + "".join(p.title() for p in name.split("-")),
        title=title,
        status="active",
        content=content,
        caseSensitive=True,
        concept=[{"code": c, "display": d} for c, d in concepts],
    )
    resp.mimetype = "application/fhir+json"
    return resp


def init_app(app: Flask) -> None:
    """Register the blueprint."""
    app.register_blueprint(bp)
