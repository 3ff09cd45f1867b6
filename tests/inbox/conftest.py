"""Fixtures of the inbox tests: a migrated SQLite database per test, the app, clients."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from cds.app import create_app
from cds.config import Settings
from cds.db import make_engine, session_factory
from cds.db.migrate import upgrade

from . import factory


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at ``alembic upgrade head``, copied for each test."""
    path = tmp_path_factory.mktemp("inbox-db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(migrated_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "inbox.db"
    shutil.copy(migrated_template, target)
    return f"sqlite:///{target}"


def make_settings(db_url: str, **server: Any) -> Settings:
    base = Settings().replace(
        database={"url": db_url, "echo": False},
        **{f"server__{key}": value for key, value in server.items()},
    )
    # Settings.replace refuses secrets inside a section, so set the key on the dataclass.
    return dataclasses.replace(
        base, server=dataclasses.replace(base.server, secret_key="test-secret-0123456789abcdef")
    )


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings, TESTING=True)
    yield application
    application.extensions["mprtm.engine"].dispose()


@pytest.fixture
def dbs(app: Flask) -> Iterator[Session]:
    """A session on the app's database (expire and re-read to see the app's writes)."""
    session = session_factory(app.extensions["mprtm.engine"])()
    yield session
    session.close()


@pytest.fixture
def data(dbs: Session) -> dict[str, Any]:
    result = factory.demo_dataset(dbs)
    dbs.commit()
    return result


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = factory.PASSWORD) -> Any:
    page = client.get("/inbox/login")
    token = csrf_of(page.get_data(as_text=True))
    return client.post(
        "/inbox/login", data={"username": username, "password": password, "csrf_token": token}
    )


@pytest.fixture
def clinician(app: Flask, data: dict[str, Any]) -> FlaskClient:
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return client


@pytest.fixture
def admin_client(app: Flask, data: dict[str, Any]) -> FlaskClient:
    client = app.test_client()
    assert login(client, "root-admin").status_code == 302
    return client


def token_of(client: FlaskClient, path: str = "/inbox/") -> str:
    return csrf_of(client.get(path).get_data(as_text=True))


def make_db(url: str) -> Session:
    return session_factory(make_engine(url))()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (one per test session)."""
    from .browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed (.ci/apt-packages.txt lists chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def smart_server() -> Iterator[Any]:
    """The SMART test authorization server (smart_server.py) on a free port."""
    from .browser import serve
    from .smart_server import SmartTestServer

    server = SmartTestServer(client_id="mprtm-inbox", redirect_uri="")
    with serve(server.app()) as url:
        server.base_url = url
        yield server
