"""``[retention]`` and ``mprtm purge``: what goes, what stays, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cds.cli import main
from cds.config import Settings
from cds.db import make_engine, migrate, session_factory
from cds.db.models import (
    Alert,
    AlertEvent,
    BatchItem,
    BatchRun,
    ImageFeatureCache,
    IssuedCard,
    Prediction,
)
from cds.errors import ConfigError
from cds.retention import purge
from connectors.pacs.cache import SeriesCache
from tests.inbox import factory

NOW = dt.datetime(2027, 6, 1, 3, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=400)
RECENT = NOW - dt.timedelta(days=10)


def _cache_series(cache: SeriesCache, uid: str, age_days: float) -> None:
    folder = cache.series_dir(uid)
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"x")
    (folder / ".complete.json").write_text('{"files": {"1.dcm": 1}}')
    stamp = NOW.timestamp() - age_days * 86400
    for path in (folder / "1.dcm", folder / ".complete.json", folder):
        os.utime(path, (stamp, stamp))


def _populate(url: str, cache_dir: Path) -> dict[str, int]:
    engine = make_engine(url)
    with session_factory(engine)() as s:
        old_run = factory.batch_run(s, "old", day=OLD.date(), errors={"p9": "timeout"})
        kept_run = factory.batch_run(s, "old-but-used", day=OLD.date())
        running = factory.batch_run(s, "old-running", day=OLD.date())
        running.status = "running"
        a, b = factory.patient(s, "a"), factory.patient(s, "b")
        ids = {
            "a_old": factory.prediction(s, a, as_of=OLD, risk=0.2).id,
            "a_old_alerted": factory.prediction(s, a, as_of=OLD, risk=0.4, run=kept_run).id,
            "a_old_carded": factory.prediction(s, a, as_of=OLD, risk=0.3).id,
            "a_recent": factory.prediction(s, a, as_of=RECENT, risk=0.2).id,
            "b_only_old": factory.prediction(s, b, as_of=OLD, risk=0.1).id,
        }
        pred_alerted = s.get(Prediction, ids["a_old_alerted"])
        alert = factory.alert(s, a, pred=pred_alerted, created=OLD, status="resolved")
        s.add(AlertEvent(alert_id=alert.id, action="resolved", at=OLD))
        for uuid, pred, at in (("c-old", "a_old", OLD), ("c-new", "a_old_carded", RECENT)):
            card = IssuedCard(card_uuid=uuid, service_id="s", patient_fhir_id="a", issued_at=at)
            card.prediction_id = ids[pred]
            s.add(card)
        factory.overlay(s, a, "1.2.3").created_at = OLD
        factory.overlay(s, b, "1.2.4").created_at = RECENT
        ids["old_run"], ids["kept_run"], ids["running"] = old_run.id, kept_run.id, running.id
        s.commit()
    engine.dispose()
    cache = SeriesCache(cache_dir)
    _cache_series(cache, "1.2.3", age_days=45)
    _cache_series(cache, "1.2.4", age_days=5)
    return ids


def _settings(url: str, cache_dir: Path, **days: int) -> Settings:
    return Settings().replace(
        database__url=url,
        pacs__cache_dir=str(cache_dir),
        retention={
            "predictions_days": 365,
            "batch_runs_days": 90,
            "issued_cards_days": 30,
            "image_cache_days": 180,
            "dicom_cache_days": 30,
            "after_nightly": False,
            **days,
        },
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_purge_deletes_exactly_what_the_limits_say(
    backend: str, tmp_path: Path, request: Any
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'r.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    migrate.upgrade(url)
    cache_dir = tmp_path / "dicom-cache"
    ids = _populate(url, cache_dir)
    settings = _settings(url, cache_dir)
    engine = make_engine(url)
    sessions = session_factory(engine)
    expected = {
        "card records": 1,
        "predictions": 1,  # only a_old: its card record goes in the same purge
        "batch runs": 1,
        "cached image outputs": 1,
        "cached DICOM series": 1,
    }
    try:
        dry = purge(settings, sessions, now=NOW, dry_run=True)
        assert dry.deleted == expected
        with sessions() as s:  # the dry run deleted nothing
            assert len(s.scalars(select(Prediction.id)).all()) == 5
            assert len(s.scalars(select(IssuedCard.id)).all()) == 2
            events = len(s.scalars(select(AlertEvent)).all())
        assert (cache_dir / "1.2.3").is_dir()

        real = purge(settings, sessions, now=NOW)
        assert real.deleted == expected
        with sessions() as s:
            left = set(s.scalars(select(Prediction.id)))
            kept = ("a_old_alerted", "a_old_carded", "a_recent", "b_only_old")
            assert left == {ids[k] for k in kept}
            assert [c.card_uuid for c in s.scalars(select(IssuedCard))] == ["c-new"]
            runs = set(s.scalars(select(BatchRun.id)))
            assert runs == {ids["kept_run"], ids["running"]}
            items = select(BatchItem).where(BatchItem.run_id == ids["old_run"])
            assert s.scalars(items).all() == []
            assert len(s.scalars(select(Alert)).all()) == 1  # alerts and their audit are kept
            assert len(s.scalars(select(AlertEvent)).all()) == events == 2
            cached = [r.series_instance_uid for r in s.scalars(select(ImageFeatureCache))]
            assert cached == ["1.2.4"]
        assert not (cache_dir / "1.2.3").exists() and (cache_dir / "1.2.4").is_dir()
        assert purge(settings, sessions, now=NOW).deleted == dict.fromkeys(expected, 0)
    finally:
        engine.dispose()


def test_purge_defaults_keep_everything_and_bad_limits_are_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    keep = Settings().replace(database__url=url)
    report = purge(keep, session_factory(engine))
    assert report.deleted == {} and "keep for ever" in report.lines()[0]
    bad = keep.replace(retention__predictions_days=-1)
    with pytest.raises(ConfigError, match="retention.predictions_days"):
        purge(bad, session_factory(engine))
    engine.dispose()


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate.upgrade(url)
    cache_dir = tmp_path / "dicom-cache"
    _populate(url, cache_dir)
    config = tmp_path / "mprtm.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[pacs]\ncache_dir = "{cache_dir}"\n'
        "[retention]\npredictions_days = 1\nissued_cards_days = 1\n"
    )
    assert main(["--config", str(config), "purge", "--dry-run"]) == 0
    # a_old, once its old card record goes (the other card and the alert keep theirs)
    assert "would delete 1 predictions" in capsys.readouterr().out
    assert main(["--config", str(config), "purge"]) == 0
    assert "deleted 1 predictions" in capsys.readouterr().out
