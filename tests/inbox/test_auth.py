"""Log-in, sessions, roles and CSRF with the Flask test client."""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from cds.app import create_app
from cds.db.models import AlertEvent, LoginFailure, User
from cds.inbox.auth import LoginThrottle

from . import factory
from .conftest import csrf_of, login, make_settings, token_of

PAGES = [
    "/inbox/",
    "/inbox/patients/p-high",
    "/inbox/patients/p-high/risk-trend.svg",
    "/inbox/patients/p-high/modality-weights.svg",
    "/inbox/patients/p-high/overlay/1.png",
    "/inbox/admin/runs",
    "/inbox/admin/runs/1",
    "/inbox/admin/model",
    "/inbox/admin/feedback",
]
ADMIN_PAGES = [
    "/inbox/admin/",
    "/inbox/admin/runs",
    "/inbox/admin/runs/1",
    "/inbox/admin/model",
    "/inbox/admin/feedback",
]


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_pages_redirect_to_login(app: Flask, data: Any, path: str) -> None:
    resp = app.test_client().get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/inbox/login?next=")


def test_login_success_sets_hardened_session_cookie(app: Flask, data: Any, dbs: Any) -> None:
    client = app.test_client()
    resp = login(client, "alice")
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0])
    assert dt.timedelta(hours=11) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=12)
    assert client.get("/inbox/").status_code == 200
    dbs.expire_all()
    assert dbs.scalar(select(User).where(User.username == "alice")).last_login is not None


def test_secure_cookie_when_configured(db_url: str) -> None:
    app = create_app(make_settings(db_url, secure_cookies=True), TESTING=True)
    with app.app_context():
        from cds.db import session_factory

        with session_factory(app.extensions["mprtm.engine"])() as s:
            factory.user(s, "bob")
            s.commit()
    client = app.test_client()
    resp = login(client, "bob")
    assert resp.status_code == 302
    assert "Secure" in resp.headers["Set-Cookie"]
    app.extensions["mprtm.engine"].dispose()


def test_wrong_password_and_unknown_user_get_the_same_answer(app: Flask, data: Any) -> None:
    client = app.test_client()
    wrong = login(client, "alice", "not the password")
    unknown = login(client, "nobody-here", "whatever123")
    assert wrong.status_code == unknown.status_code == 401
    assert b"Unknown user name or wrong password." in wrong.data
    assert b"Unknown user name or wrong password." in unknown.data
    assert client.get("/inbox/").status_code == 302


def test_login_is_rate_limited_per_user_name(app: Flask, data: Any) -> None:
    client = app.test_client()
    for _ in range(5):
        assert login(client, "alice", "wrong-password").status_code == 401
    locked = login(client, "alice")  # even the right password is refused now
    assert locked.status_code == 429
    assert b"Too many failed attempts" in locked.data
    assert login(app.test_client(), "root-admin").status_code == 302  # other names unaffected


def test_throttle_window_slides(app: Flask) -> None:
    throttle = LoginThrottle(app.extensions["mprtm.sessions"], max_failures=2, window_s=60)
    throttle.failure("Ann", now=0.0)
    throttle.failure("ann ", now=10.0)
    assert throttle.locked_for("ANN", now=11.0) == pytest.approx(49.0)
    assert throttle.locked_for("bob", now=11.0) == 0.0
    assert throttle.locked_for("ann", now=61.0) == 0.0
    throttle.failure("ann", now=62.0)  # drops the failure at 0, older than the window
    with app.extensions["mprtm.sessions"]() as s:
        keys = list(s.scalars(select(LoginFailure.name_key)))
    assert len(keys) == 2
    assert all(len(k) == 64 and "ann" not in k for k in keys)  # a hash, not the name
    throttle.success("ann")
    assert throttle.locked_for("ann", now=63.0) == 0.0
    with pytest.raises(ValueError):
        LoginThrottle(app.extensions["mprtm.sessions"], max_failures=0)


def test_failures_on_one_server_process_lock_the_name_on_another(
    app: Flask, data: Any, db_url: str
) -> None:
    """A second application on the same database stands for a second server process."""
    other = create_app(make_settings(db_url), TESTING=True)
    try:
        for i in range(5):
            target = app if i % 2 else other
            assert login(target.test_client(), "alice", "wrong-password").status_code == 401
        assert login(app.test_client(), "alice").status_code == 429
        assert login(other.test_client(), "alice").status_code == 429
    finally:
        other.extensions["mprtm.engine"].dispose()


def test_inactive_user_cannot_log_in_and_is_logged_out(app: Flask, data: Any, dbs: Any) -> None:
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    alice = dbs.scalar(select(User).where(User.username == "alice"))
    alice.active = False
    dbs.commit()
    assert client.get("/inbox/").status_code == 302  # the session no longer counts
    assert login(app.test_client(), "alice").status_code == 401


def test_open_redirect_is_refused(app: Flask, data: Any) -> None:
    targets = ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x")
    for target in (*targets, "/inbox/patients/p-mod"):
        client = app.test_client()
        token = csrf_of(client.get("/inbox/login").get_data(as_text=True))
        form = {
            "username": "alice",
            "password": factory.PASSWORD,
            "csrf_token": token,
            "next": target,
        }
        resp = client.post("/inbox/login", data=form)
        expected = target if target == "/inbox/patients/p-mod" else "/inbox/"
        assert resp.headers["Location"] == expected, target


def test_logout_needs_post_with_csrf(clinician: Any) -> None:
    assert clinician.get("/inbox/logout").status_code == 405
    assert clinician.post("/inbox/logout").status_code == 400
    token = token_of(clinician)
    assert clinician.post("/inbox/logout", data={"csrf_token": token}).status_code == 302
    assert clinician.get("/inbox/").status_code == 302


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_clinician_gets_403_on_admin_pages(clinician: Any, path: str) -> None:
    resp = clinician.get(path)
    assert resp.status_code == 403
    assert b"for administrators" in resp.data


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_opens_admin_pages(admin_client: Any, path: str) -> None:
    assert admin_client.get(path).status_code == 200


def test_admin_links_only_for_admins(clinician: Any, admin_client: Any) -> None:
    assert b"Batch runs" not in clinician.get("/inbox/").data
    assert b"Batch runs" in admin_client.get("/inbox/").data


POSTS = [
    "/inbox/alerts/acknowledge",
    "/inbox/alerts/1/acknowledge",
    "/inbox/alerts/1/assign",
    "/inbox/alerts/1/snooze",
    "/inbox/alerts/1/resolve",
    "/inbox/logout",
]


@pytest.mark.parametrize("path", POSTS)
def test_every_form_needs_the_csrf_token(clinician: Any, dbs: Any, path: str) -> None:
    body = {
        "alert_id": "1",
        "assignee": "me",
        "until": "2099-01-01",
        "reason": "other",
        "comment": "x",
    }
    assert clinician.post(path, data=body).status_code == 400
    bad = clinician.post(path, data={**body, "csrf_token": "forged-" + "x" * 40})
    assert bad.status_code == 400
    assert b"security token" in bad.data
    assert clinician.post(path, data=body, headers={"X-CSRF-Token": "nope"}).status_code == 400
    dbs.expire_all()
    actions = dbs.scalars(select(AlertEvent.action)).all()
    assert set(actions) == {"created"}  # nothing happened


def test_login_form_itself_needs_csrf(app: Flask, data: Any) -> None:
    client = app.test_client()
    resp = client.post("/inbox/login", data={"username": "alice", "password": factory.PASSWORD})
    assert resp.status_code == 400


def test_csrf_token_is_rotated_at_login(app: Flask, data: Any) -> None:
    client = app.test_client()
    before = csrf_of(client.get("/inbox/login").get_data(as_text=True))
    client.post(
        "/inbox/login",
        data={"username": "alice", "password": factory.PASSWORD, "csrf_token": before},
    )
    after = token_of(client)
    assert before != after
    resp = client.post("/inbox/alerts/1/acknowledge", data={"csrf_token": before})
    assert resp.status_code == 400


def test_csrf_header_is_accepted(clinician: Any, data: Any) -> None:
    token = token_of(clinician)
    alert_id = data["alerts"]["high"].id
    resp = clinician.post(f"/inbox/alerts/{alert_id}/acknowledge", headers={"X-CSRF-Token": token})
    assert resp.status_code == 303


def test_demo_login_only_when_enabled(app: Flask, data: Any, db_url: str) -> None:
    client = app.test_client()
    token = csrf_of(client.get("/inbox/login").get_data(as_text=True))
    assert b"demo clinician" not in client.get("/inbox/login").data
    assert client.post("/inbox/demo-login", data={"csrf_token": token}).status_code == 404

    demo = create_app(make_settings(db_url, demo_login=True), TESTING=True)
    c2 = demo.test_client()
    page = c2.get("/inbox/login?next=/inbox/patients/p-high").get_data(as_text=True)
    assert "Continue as the demo clinician" in page
    resp = c2.post(
        "/inbox/demo-login", data={"csrf_token": csrf_of(page), "next": "/inbox/patients/p-high"}
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox/patients/p-high"
    assert b"demo-clinician" in c2.get("/inbox/patients/p-high").data
    demo.extensions["mprtm.engine"].dispose()


def test_security_headers(clinician: Any) -> None:
    resp = clinician.get("/inbox/")
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"


def test_healthz_is_untouched_by_the_inbox(app: Flask) -> None:
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok", "version": "0.1.0"}
