"""The registry's state machine, the promotion gate, audit events, the CLI, and two
concurrent promotions on PostgreSQL (one wins, the other gets a clear error)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.cli import main
from cds.config import RegistrySettings, Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.migrate import upgrade
from cds.db.models import ModelVersion, ModelVersionEvent
from cds.registry import (
    ConcurrentChangeError,
    GateRefusedError,
    RegistryError,
    active_version,
    attach_validation,
    bootstrap,
    promote,
    register,
    retire,
)
from tests.registry.conftest import validation_report

LIMITS = RegistrySettings()


def _session(url: str) -> Session:
    upgrade(url)
    return session_factory(make_engine(url))()


def test_state_machine_gate_and_audit(
    tmp_path: Path, checkpoint: Path, other_checkpoint: Path
) -> None:
    s = _session(f"sqlite:///{tmp_path / 'r.db'}")
    base = register(s, checkpoint, actor="alice", reason="base model")
    assert base.state == "candidate"
    with pytest.raises(RegistryError, match="already registered as model version"):
        register(s, checkpoint, actor="alice")
    # no validation stored: refused, the missing report named
    with pytest.raises(GateRefusedError, match="no stored `mprtm validate` report"):
        promote(s, base.id, "active", limits=LIMITS, actor="alice")
    attach_validation(s, base.id, validation_report(checkpoint), limits=LIMITS, actor="alice")
    assert promote(s, base.id, "active", limits=LIMITS, actor="alice").state == "active"

    worse = register(s, other_checkpoint, actor="bob")
    with pytest.raises(RegistryError, match="is of checkpoint"):  # another checkpoint's report
        attach_validation(s, worse.id, validation_report(checkpoint), limits=LIMITS, actor="bob")
    bad = validation_report(other_checkpoint, auroc_low=0.55, ece=0.2, ratio=2.6)
    attach_validation(s, worse.id, bad, limits=LIMITS, actor="bob")
    assert promote(s, worse.id, "shadow", limits=LIMITS, actor="bob").state == "shadow"
    with pytest.raises(GateRefusedError) as refused:
        promote(s, worse.id, "active", limits=LIMITS, actor="bob")
    text = str(refused.value)
    assert "AUROC CI lower bound for death 0.550 < registry.min_auroc_ci_lower 0.7" in text
    assert "ECE of rehosp 0.200 > registry.max_ece 0.1" in text
    assert "subgroup sex=female (death) 2.60 outside" in text
    assert "age=>=75" not in text  # only the gate outcome's subgroups count
    assert active_version(s).id == base.id  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="needs --reason"):
        promote(s, worse.id, "active", limits=LIMITS, actor="bob", force=True)
    promote(s, worse.id, "active", limits=LIMITS, actor="bob", force=True, reason="trial")
    s.commit()
    assert active_version(s).id == worse.id  # type: ignore[union-attr]
    assert s.get_one(ModelVersion, base.id).state == "retired"
    # exactly one active; retired is final; the active one cannot be retired
    assert len(s.scalars(select(ModelVersion).where(ModelVersion.state == "active")).all()) == 1
    with pytest.raises(RegistryError, match="cannot become shadow"):
        promote(s, base.id, "shadow", limits=LIMITS, actor="alice")
    with pytest.raises(RegistryError, match="is active: promote another"):
        retire(s, worse.id, actor="alice")
    events = s.scalars(select(ModelVersionEvent).order_by(ModelVersionEvent.id)).all()
    forced = [e for e in events if e.forced]
    assert len(forced) == 1
    assert (forced[0].actor, forced[0].reason, forced[0].to_state) == ("bob", "trial", "active")
    assert "AUROC CI lower bound" in forced[0].detail["gate_failures"][0]
    assert [
        (e.model_version_id, e.action, e.to_state) for e in events if e.action != "validation"
    ] == [
        (base.id, "register", "candidate"),
        (base.id, "promote", "active"),
        (worse.id, "register", "candidate"),
        (worse.id, "promote", "shadow"),
        (base.id, "retire", "retired"),
        (worse.id, "promote", "active"),
    ]
    s.close()


def test_bootstrap_registers_the_configured_checkpoint(
    migrated_settings: Settings, checkpoint: Path, other_checkpoint: Path
) -> None:
    s = session_factory(make_engine(migrated_settings.database.url))()
    missing = migrated_settings.replace(model__checkpoint=str(checkpoint) + ".missing")
    assert bootstrap(s, missing) is None
    settings = migrated_settings.replace(model__checkpoint=str(checkpoint))
    mv = bootstrap(s, settings)
    assert mv is not None and mv.state == "active"
    # a second call, or another configured file, keeps the registry's active version
    other = settings.replace(model__checkpoint=str(other_checkpoint))
    assert bootstrap(s, other) is mv
    assert len(s.scalars(select(ModelVersion)).all()) == 1
    s.close()


@pytest.mark.postgres
def test_concurrent_promotions_one_wins(
    pg_url: str, checkpoint: Path, other_checkpoint: Path, tmp_path: Path
) -> None:
    import shutil

    third = tmp_path / "third.pt"
    shutil.copy(other_checkpoint, third)
    third.write_bytes(third.read_bytes())  # same weights, its own row needs another hash:
    with third.open("ab") as f:  # torch.load ignores bytes after the archive's end
        f.write(b"\0")
    setup = _session(pg_url)
    ids = []
    for ck in (checkpoint, other_checkpoint, third):
        mv = register(setup, ck, actor="setup")
        attach_validation(setup, mv.id, validation_report(ck), limits=LIMITS, actor="setup")
        ids.append(mv.id)
    promote(setup, ids[0], "active", limits=LIMITS, actor="setup")
    setup.commit()
    setup.close()
    setup.get_bind().dispose()  # no pooled connection outlives the scratch database
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    first = sessions()
    promote(first, ids[1], "active", limits=LIMITS, actor="alice")  # holds its row locks
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope(sessions) as s2:
                promote(s2, ids[2], "active", limits=LIMITS, actor="bob")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    t.join(1.0)
    assert t.is_alive(), "the second promotion waits for the first one's locks"
    first.commit()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], ConcurrentChangeError)
    assert "another change was made at the same time" in str(errors[0])
    with session_scope(sessions) as s:
        assert active_version(s).id == ids[1]  # type: ignore[union-attr]
        states = {mv.id: mv.state for mv in s.scalars(select(ModelVersion))}
    assert states == {ids[0]: "retired", ids[1]: "active", ids[2]: "candidate"}
    first.close()
    engine.dispose()


def test_cli_register_list_promote(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    other_checkpoint: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("MPRTM_DATABASE__URL", url)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(validation_report(checkpoint)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(validation_report(other_checkpoint, auroc_low=0.5)))
    assert main(["model", "register", str(checkpoint), "--validation", str(good)]) == 0
    base_id = int(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["model", "register", str(other_checkpoint), "--actor", "bob"]) == 0
    worse_id = int(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["model", "validation", str(worse_id), str(bad)]) == 0
    assert "gate: fails" in capsys.readouterr().out
    assert main(["model", "promote", str(base_id), "--to", "active"]) == 0
    assert main(["model", "promote", str(worse_id), "--to", "shadow"]) == 0
    capsys.readouterr()
    assert main(["model", "promote", str(worse_id), "--to", "active"]) == 1
    assert "AUROC CI lower bound for death 0.500" in capsys.readouterr().err
    assert main(["model", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[base_id]["state"] == "active" and rows[worse_id]["state"] == "shadow"
    for r in rows.values():
        assert {"id", "state", "created", "checkpoint_sha256", "validation"} <= set(r)
    assert rows[worse_id]["validation"]["auroc_ci_lower"] == 0.5
    assert main(["model", "promote", str(worse_id), "--to", "active", "--force",
                 "--reason", "site trial"]) == 0  # fmt: skip
    assert main(["model", "retire", str(base_id)]) == 2 - 1  # retired already: an error
    assert "cannot be retired" in capsys.readouterr().err
