"""PHI kept out of logs on PostgreSQL errors, the log-in throttle under concurrent
attempts, and a burst of log-ins on every server thread."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DataError

from cds.app import create_app
from cds.db import make_engine, session_factory
from cds.db.migrate import upgrade

from . import factory
from .conftest import csrf_of, login, make_settings

PHI_COMMENT = "Pt Jane Doe DOB 1950-03-14"
TYPED_PASSWORD = "hunter2-typed-as-name"


def _app(url: str, threads: int = 8) -> Flask:
    base = make_settings(url)
    settings = dataclasses.replace(base, server=dataclasses.replace(base.server, threads=threads))
    app = create_app(settings)  # not TESTING: errors are logged and answered as in production
    with session_factory(app.extensions["mprtm.engine"])() as s:
        factory.demo_dataset(s)
        s.commit()
    return app


@pytest.fixture
def pg_app(pg_url: str) -> Iterator[Flask]:
    upgrade(pg_url)
    app = _app(pg_url, threads=16)
    yield app
    app.extensions["mprtm.engine"].dispose()


@pytest.mark.postgres
def test_sql_parameters_never_reach_an_error_message(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn, pytest.raises(DataError) as err:
            conn.execute(text("SELECT CAST(:v AS text)"), {"v": PHI_COMMENT + "\x00"})
        assert "Jane Doe" not in str(err.value)
        assert "parameters hidden" in str(err.value)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_phi_sent_in_bad_input_is_not_logged(
    pg_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = pg_app.test_client()
    assert login(client, "alice").status_code == 302
    token = csrf_of(client.get("/inbox/").get_data(as_text=True))
    with caplog.at_level(logging.DEBUG):
        resolve = client.post(
            "/inbox/alerts/1/resolve",
            data={"csrf_token": token, "reason": "other", "comment": PHI_COMMENT + "\x00"},
        )
        anon = pg_app.test_client()
        page = anon.get("/inbox/login").get_data(as_text=True)
        typed = anon.post(
            "/inbox/login",
            data={"csrf_token": csrf_of(page), "username": TYPED_PASSWORD + "\x00", "password": ""},
        )
    assert resolve.status_code == 400 and "comment" in resolve.get_data(as_text=True)
    assert typed.status_code == 400 and "username" in typed.get_data(as_text=True)
    logged = "\n".join(
        r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records
    )
    assert "Jane Doe" not in logged and TYPED_PASSWORD not in logged


def _burst(app: Flask, n: int, password: str, users: list[str] | None = None) -> list[int]:
    """``n`` log-ins at once (of alice, or of ``users[i]``), each from its own client."""
    clients = [app.test_client() for _ in range(n)]
    tokens = [csrf_of(c.get("/inbox/login").get_data(as_text=True)) for c in clients]
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        resp = clients[i].post(
            "/inbox/login",
            data={
                "csrf_token": tokens[i],
                "username": users[i] if users else "alice",
                "password": password,
            },
        )
        with lock:
            statuses.append(resp.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return statuses


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_wrong_passwords_are_counted_before_checking(
    backend: str, request: pytest.FixtureRequest, db_url: str
) -> None:
    url = db_url
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        upgrade(url)
    app = _app(url)
    try:
        statuses = _burst(app, 12, "wrong-password")
        assert len(statuses) == 12 and set(statuses) <= {401, 429}
        assert statuses.count(401) <= 5, statuses  # at most max_failures were evaluated
        later = [login(app.test_client(), "alice", "wrong").status_code for _ in range(6)]
        assert statuses.count(401) + later.count(401) == 5, (statuses, later)
        assert login(app.test_client(), "alice").status_code == 429
    finally:
        app.extensions["mprtm.engine"].dispose()


@pytest.mark.postgres
def test_a_burst_of_logins_on_every_thread_does_not_exhaust_the_pool(pg_app: Flask) -> None:
    engine = pg_app.extensions["mprtm.engine"]
    assert engine.pool.size() >= 16
    names = [f"clinician-{i}" for i in range(16)]
    with session_factory(engine)() as s:
        for name in names:
            factory.user(s, name)
        s.commit()
    t0 = time.monotonic()
    statuses = _burst(pg_app, 16, factory.PASSWORD, names)
    elapsed = time.monotonic() - t0
    assert statuses == [302] * 16, statuses
    assert elapsed < 20, elapsed
