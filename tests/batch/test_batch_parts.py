"""Batch building blocks that need no model: FHIR output, write-back, alert rules, lock."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import select

from cds.batch.alerts import apply_findings, evaluate_rules
from cds.batch.fhir_out import build_device, build_risk_assessment, ra_identifier_value
from cds.batch.lock import batch_lock
from cds.batch.scheduler import latest_tick, make_trigger
from cds.batch.writeback import NdjsonWriter
from cds.config import AlertSettings, Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Alert, AlertEvent, Patient, Prediction
from cds.errors import ConfigError

PROBS = {
    "death": 0.31,
    "cv_death": 0.2,
    "rehospitalization": 0.5,
    "cardiology_rehospitalization": 0.4,
    "macce": 0.45,
}
TIERS = {k: ("high" if v >= 0.3 else "moderate") for k, v in PROBS.items()}


def _ra(patient: str = "p1", day: dt.date = dt.date(2026, 11, 29)) -> RiskAssessment:
    return build_risk_assessment(
        patient_id=patient,
        model_name="mprtm",
        model_version="mprtm-abc",
        device_reference="Device/d1",
        occurrence=dt.datetime(2026, 11, 29, 2, 0, tzinfo=dt.UTC),
        run_date=day,
        probabilities=PROBS,
        tiers=TIERS,
        modality_weights={"numeric": 0.5, "text": 0.3, "image": 0.2},
        fibrosis_burden=0.12,
        basis=["Observation/o1", "Condition/c1"],
        contributions={"death": {"reference": 0.1, "numeric": 0.08, "text": 0.05, "image": -0.02}},
    )


def test_risk_assessment_is_valid_r4_and_complete() -> None:
    ra = _ra()
    again = RiskAssessment.model_validate_json(ra.model_dump_json())
    assert again.status == "final"
    assert again.subject.reference == "Patient/p1"
    assert again.identifier[0].value == ra_identifier_value(
        "mprtm-abc", "p1", dt.date(2026, 11, 29)
    )
    assert [b.reference for b in again.basis] == ["Observation/o1", "Condition/c1"]
    death = again.prediction[0]
    assert death.outcome.coding[0].system == "http://snomed.info/sct"
    assert death.outcome.coding[0].code == "419620001"
    assert float(death.probabilityDecimal) == pytest.approx(0.31)
    # 31%: "moderate" by HL7 risk-probability; the product's tier "high" in its extension
    assert death.qualitativeRisk.coding[0].code == "moderate"
    assert death.extension[0].valueCodeableConcept.coding[0].code == "high"
    assert death.whenPeriod.end.year == 2027
    assert "image 0.20" in again.note[0].text and "12.0%" in again.note[0].text
    assert (
        "typical patients 10.0%; clinical measurements +8.0, medications and notes +5.0, "
        "LGE cardiac MRI −2.0 percentage points; together 21.0%"
    ) in again.note[0].text
    assert again.method.coding[0].version == "mprtm-abc"


def test_ndjson_writer_is_idempotent_by_identifier(tmp_path: Path) -> None:
    w = NdjsonWriter(tmp_path / "out" / "RiskAssessment.ndjson")
    dev = w.ensure_device(build_device("mprtm", "mprtm-abc", "http://x/model-card", synthetic=True))
    assert dev == w.ensure_device(
        build_device("mprtm", "mprtm-abc", "http://x/model-card", synthetic=True)
    )
    assert len((tmp_path / "out" / "Device.ndjson").read_text().splitlines()) == 1
    id1 = w.write(_ra("p1"))
    id2 = w.write(_ra("p1"))  # a re-run the same day
    w.write(_ra("p2"))
    w.write(_ra("p1", dt.date(2026, 11, 30)))  # next day: a new assessment
    assert id1 == id2
    with (tmp_path / "out" / "RiskAssessment.ndjson").open("a") as fh:
        fh.write('{"resourceType": "RiskAss')  # torn line of a killed run
    assert w.compact() == 3
    lines = (tmp_path / "out" / "RiskAssessment.ndjson").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        RiskAssessment.model_validate(json.loads(line))


def _pred(
    s, patient: Patient, p: float, burden: float | None, run_id: int | None = None
) -> Prediction:
    row = Prediction(
        patient_id=patient.id,
        run_id=run_id,
        probabilities={"death": p},
        tiers={"death": "high" if p >= 0.3 else "low"},
        fibrosis_burden=burden,
    )
    s.add(row)
    s.flush()
    return row


def test_alert_rules_and_one_open_alert_per_reason(migrated_settings: Settings) -> None:
    rules = AlertSettings(
        outcome="death", on_high_tier=True, threshold=0.2, rise=0.1, fibrosis_burden=0.15
    )
    engine = make_engine(migrated_settings.database.url)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        pat = Patient(fhir_id="p1")
        s.add(pat)
        s.flush()
        first = _pred(s, pat, 0.15, 0.05)
        assert evaluate_rules(rules, first, None) == []
        second = _pred(s, pat, 0.35, 0.2)
        reasons = {f.reason for f in evaluate_rules(rules, second, first)}
        assert reasons == {"high_tier", "threshold_crossing", "rise", "fibrosis"}
        assert (
            apply_findings(
                s, second, evaluate_rules(rules, second, first), outcome="death", run_id=None
            )
            == 4
        )
        third = _pred(s, pat, 0.5, 0.2)
        # still high and fibrotic, rose again: refreshes open alerts, opens none
        assert (
            apply_findings(
                s, third, evaluate_rules(rules, third, second), outcome="death", run_id=None
            )
            == 0
        )
        alerts = list(s.scalars(select(Alert)))
        assert len(alerts) == 4
        high = next(a for a in alerts if a.reason == "high_tier")
        assert high.prediction_id == third.id
        actions = [
            e.action for e in s.scalars(select(AlertEvent).where(AlertEvent.alert_id == high.id))
        ]
        assert actions == ["created", "refreshed"]
        # once resolved, the same reason may open a new alert
        high.status, high.open_key = "resolved", None
        s.flush()
        fourth = _pred(s, pat, 0.6, None)
        assert (
            apply_findings(
                s, fourth, evaluate_rules(rules, fourth, third), outcome="death", run_id=None
            )
            == 1
        )
    engine.dispose()


def _try_lock(url: str, lock_file: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    engine = make_engine(url)
    with batch_lock(engine, "mprtm-batch:all", lock_file) as held:
        q.put(held)
    engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_batch_lock_excludes_a_second_process(backend: str, tmp_path: Path, request) -> None:
    url = (
        f"sqlite:///{tmp_path / 'l.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    lock_file = str(tmp_path / "batch.lock")
    engine = make_engine(url)
    ctx = mp.get_context("spawn")
    with batch_lock(engine, "mprtm-batch:all", lock_file) as held:
        assert held
        q = ctx.Queue()
        p = ctx.Process(target=_try_lock, args=(url, lock_file, q))
        p.start()
        assert q.get(timeout=60) is False
        p.join(60)
    q = ctx.Queue()
    p = ctx.Process(target=_try_lock, args=(url, lock_file, q))
    p.start()
    assert q.get(timeout=60) is True
    p.join(60)
    engine.dispose()


def test_cron_triggers_and_ticks() -> None:
    trig = make_trigger("0 2 * * *", "Europe/Amsterdam")
    now = dt.datetime(2026, 11, 29, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    tick = latest_tick(trig, now, 3600)
    assert tick is not None and (tick.hour, tick.minute) == (2, 0)
    assert latest_tick(trig, now + dt.timedelta(hours=2), 3600) is None  # past the grace
    fast = make_trigger("*/5 * * * * *", "UTC")
    t = latest_tick(fast, dt.datetime(2026, 1, 1, 0, 0, 12, tzinfo=dt.UTC), 60)
    assert t == dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="batch.schedule"):
        make_trigger("every night", "UTC")
    with pytest.raises(ConfigError, match="batch.timezone"):
        make_trigger("0 2 * * *", "Mars/Olympus")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://mprtm@mq:5672//", "amqp://mprtm:p%40ss@mq:5672//"),
        ("redis://127.0.0.1:6379/0", "redis://:p%40ss@127.0.0.1:6379/0"),
        ("amqp://mprtm:given@mq//", "amqp://mprtm:given@mq//"),
    ],
)
def test_broker_password_goes_into_the_url(settings: Settings, url: str, expected: str) -> None:
    from cds.batch.celery_app import _broker_url

    s = settings.replace(batch__broker_url=url, batch__broker_password="p@ss")
    assert _broker_url(s) == expected
