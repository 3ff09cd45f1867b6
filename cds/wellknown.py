"""``GET /.well-known/jwks.json``: the public keys of our SMART clients.

The EHR's authorization server verifies our client assertions with them (register this URL,
or the document it returns, with the EHR).  Only public halves are published: of
``fhir.private_key_file`` when ``fhir.auth = "smart-backend"`` (Backend Services) and of
``server.smart_private_key_file`` when ``server.smart_client_auth = "private_key_jwt"`` (the
inbox as a confidential asymmetric client).  With neither configured the endpoint answers 404.
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


def init_app(app: Flask) -> None:
    """Register the blueprint."""
    app.register_blueprint(bp)
