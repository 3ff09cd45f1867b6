"""`mprtm db upgrade` and `mprtm users add` through the real CLI entry point."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cds.cli import main
from cds.db.models import User
from cds.logs import JsonFormatter, PhiScrubFilter
from cds.users import verify_password


def test_db_upgrade_then_users_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("MPRTM_DATABASE__URL", url)
    assert main(["db", "upgrade"]) == 0
    from alembic.script import ScriptDirectory

    from cds.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert f"database at revision {head}" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("correct horse battery\n"))
    assert main(["users", "add", "dr-lee", "--role", "admin", "--password-stdin"]) == 0
    engine = create_engine(url)
    with Session(engine) as s:
        user = s.scalar(select(User).where(User.username == "dr-lee"))
        assert user is not None and user.role == "admin"
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
        assert verify_password(user.password_hash, "correct horse battery")
        assert not verify_password(user.password_hash, "wrong password")
    engine.dispose()
    # duplicate and short password are usage errors (exit 2)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("correct horse battery\n"))
    assert main(["users", "add", "dr-lee", "--password-stdin"]) == 2
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("short\n"))
    assert main(["users", "add", "nurse", "--password-stdin"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_json_log_lines_and_phi_scrub() -> None:
    rec = logging.makeLogRecord(
        {
            "name": "mprtm.test",
            "levelno": 20,
            "levelname": "INFO",
            "msg": "scored %s",
            "args": ("Patient/p1",),
        }
    )
    rec.birthdate = "1950-01-01"
    rec.patient_id = "p1"
    PhiScrubFilter().filter(rec)
    line = JsonFormatter().format(rec)
    assert '"msg": "scored Patient/p1"' in line
    assert '"patient_id": "p1"' in line
    assert "1950" not in line
