"""Fixtures shared by every test area: settings, migrated databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.config import Settings, load_settings

#: session fixtures shared by every area: one FHIR engine per test session
pytest_plugins = ["tests.servers.fhir_engine"]

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "MPRTM_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults with a private SQLite file and output paths under tmp_path."""
    base = load_settings(environ={})
    return base.replace(
        database__url=f"sqlite:///{tmp_path / 'mprtm.db'}",
        fhir__writeback_path=str(tmp_path / "out" / "RiskAssessment.ndjson"),
        pacs__cache_dir=str(tmp_path / "cache"),
        batch__lock_file=str(tmp_path / "batch.lock"),
    )


@pytest.fixture
def migrated_settings(settings: Settings) -> Settings:
    """``settings`` whose SQLite database is migrated to head."""
    from cds.db.migrate import upgrade

    upgrade(settings.database.url)
    return settings


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3
        ):
            return True
    except Exception:  # noqa: BLE001  (any failure means: no server to test against)
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A scratch PostgreSQL database for one test, dropped afterwards."""
    if not _pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    import psycopg

    name = f"mprtm_test_{uuid.uuid4().hex[:12]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
