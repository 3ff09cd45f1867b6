"""The Flask application factory: ``create_app(settings)``; no module-level app."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask, jsonify
from sqlalchemy import text

from cds import __version__, _guards
from cds.audit import init_app as init_audit
from cds.config import Settings, load_settings
from cds.db import make_engine, session_factory
from cds.hooks import init_app as init_hooks
from cds.inbox import init_app as init_inbox
from cds.terminology import activate as activate_terminology
from cds.wellknown import init_app as init_wellknown

log = logging.getLogger("mprtm.app")


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the web application (CDS Hooks service, alert inbox, health endpoints)."""
    settings = settings or load_settings()
    app = Flask("cds", instance_relative_config=False)
    secret = settings.server.secret_key
    if not secret:
        log.warning(
            "server.secret_key is not set (MPRTM_SERVER__SECRET_KEY); "
            "using a random key: sessions end when the process restarts"
        )
        secret = secrets.token_hex(32)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.server.secure_cookies,
        MAX_CONTENT_LENGTH=5 * 1024 * 1024,
    )
    app.config.update(overrides)
    # every server thread, every on-demand scorer, the card writer and the fetch of a
    # scorer's cached image may each hold one connection at the same time
    pool_size = settings.server.threads + 2 * settings.cds_hooks.workers + 2
    engine = make_engine(settings.database.url, echo=settings.database.echo, pool_size=pool_size)
    app.extensions["mprtm.settings"] = settings
    app.extensions["mprtm.engine"] = engine
    app.extensions["mprtm.sessions"] = session_factory(engine)
    activate_terminology(settings)  # value-set expansions cached by `terminology refresh`
    _guards.init_app(app)  # before the blueprints: the bounded <int:> converter

    init_audit(app, settings)  # AuditEvents of access to patient data; /metrics
    init_hooks(app, settings)  # CDS Hooks service: /cds-services

    @app.get("/healthz")
    def healthz() -> Any:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return jsonify(status="ok", version=__version__)

    init_inbox(app)
    init_wellknown(app)  # /.well-known/jwks.json (SMART backend client key)

    return app
