"""``GET /.well-known/jwks.json``: the public key of our SMART Backend Services client.

The EHR's authorization server verifies our client assertions with it (register this URL,
or the document it returns, with the EHR).  Only the public half of
``fhir.private_key_file`` is published; without ``fhir.auth = "smart-backend"`` the
endpoint answers 404.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from connectors.errors import FhirAuthError
from connectors.fhir.jwks import public_jwks

log = logging.getLogger("mprtm.wellknown")

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Any:
    settings = current_app.extensions["mprtm.settings"]
    f = settings.fhir
    if f.auth != "smart-backend" or not f.private_key_file:
        resp = jsonify(
            error="not_found", error_description="no SMART backend client key is configured"
        )
        return resp, 404
    try:
        doc = public_jwks(f.private_key_file, f.key_alg, f.key_id)
    except FhirAuthError as exc:
        log.error("cannot publish the JWKS: %s", exc)
        return jsonify(
            error="unavailable",
            error_description="fhir.private_key_file is not usable; see the server log",
        ), 503
    resp = jsonify(doc)
    resp.headers["Cache-Control"] = "public, max-age=3600"
    resp.mimetype = "application/json"
    return resp


def init_app(app: Flask) -> None:
    """Register the blueprint."""
    app.register_blueprint(bp)
