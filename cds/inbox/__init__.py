"""The clinician alert inbox: a server-rendered Flask web app inside ``create_app``.

Blueprints: ``auth`` (log-in, log-out, demo log-in), ``inbox`` (alert list, patient
page, actions), ``smart`` (SMART App Launch from the EHR), ``admin`` (batch runs, model,
card feedback; role ``admin``) and ``public`` (``/model-card``).  Templates live in
``cds/templates/inbox/``, CSS and the small optional script in ``cds/static/``.
Every form is CSRF-protected (:mod:`cds.inbox.csrf`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask, Response, g, render_template
from werkzeug.exceptions import HTTPException

from cds import __version__, labels
from cds.explain import signed_points
from cds.inbox import admin, admin_models, auth, csrf, present, smart, views
from cds.inbox._db import close_db, settings

#: Content Security Policy of every inbox page: nothing from other origins, no inline
#: script or style, and no framing (session cookies are SameSite=Lax, so the inbox is
#: opened by the EHR in its own window rather than inside an iframe).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def init_app(app: Flask) -> None:
    """Register the inbox's blueprints, hooks, Jinja helpers and error pages on ``app``."""
    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(hours=auth.SESSION_HOURS)
    app.extensions["mprtm.login_throttle"] = auth.LoginThrottle(app.extensions["mprtm.sessions"])
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    app.teardown_appcontext(close_db)
    app.jinja_env.globals.update(
        csrf_token=csrf.csrf_token,
        outcome_label=labels.outcome_label,
        modality_label=labels.modality_label,
        modality_short=lambda m: labels.MODALITY_SHORT.get(m, m),
        tier_label=lambda t: labels.TIER_LABELS.get(t, t),
        when_text=labels.when_text,
        source_url=lambda ref: present.source_url(
            settings().fhir.base_url if settings().fhir.source == "server" else "", ref
        ),
        reason_label=lambda r: present.REASON_LABELS.get(r, r.replace("_", " ")),
        action_label=lambda a: present.ACTION_LABELS.get(a, a.replace("_", " ")),
        principal=lambda: g.get("principal"),
        demo_login=lambda: settings().server.demo_login,
        app_version=__version__,
    )
    app.jinja_env.filters.update(
        dt=present.fmt_dt,
        date=present.fmt_date,
        pct=present.fmt_pct,
        dicom_date=present.fmt_dicom_date,
        points=present.fmt_points,
        signed=lambda v: "—" if v is None else signed_points(float(v)),
    )


def _security_headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _error_page(exc: HTTPException) -> Any:
    """HTML error pages for the inbox's URLs (other blueprints keep their own)."""
    code = exc.code or 500
    resp = Response(
        render_template(
            "inbox/error.html", code=code, title=exc.name, message=exc.description or ""
        ),
        status=code,
        mimetype="text/html",
    )
    return _security_headers(resp)


BLUEPRINTS = (auth.bp, views.bp, smart.bp, admin.bp, admin.public)
#: modules that add routes to ``admin.bp`` (imported for that)
ADMIN_PAGES = (admin_models,)
for _bp in BLUEPRINTS:  # once, at import: blueprints are shared by every app instance
    _bp.before_request(auth.load_principal)
    _bp.before_request(csrf.protect)
    _bp.after_request(_security_headers)
    _bp.register_error_handler(HTTPException, _error_page)
