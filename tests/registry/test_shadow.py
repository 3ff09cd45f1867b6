"""Shadow mode end to end on the embedded default: the nightly batch scores with the
active version and the shadow version; only the active one reaches RiskAssessments,
Predictions (what cards and the inbox read) and alerts; the shadow's scores are stored
apart.  A promotion is picked up by the same runner at its next run (no restart)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from sqlalchemy import select

from cds.app import create_app
from cds.batch.runner import BatchRunner, RunOptions
from cds.config import RegistrySettings, Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Alert, ModelVersion, Prediction, ShadowPrediction
from cds.registry import promote, register
from cds.users import add_user
from tests.batch.conftest import AS_OF, N_PATIENTS, batch_settings
from tests.inbox.conftest import login


def _comparison_page_shows(
    settings: Settings, shadow_id: int, shadow_version: str, active_version: str
) -> None:
    """The admin comparison page, rendered from what the batch stored; the clinicians'
    inbox never names the shadow version."""
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, secret_key="k" * 40)
    )
    app = create_app(settings, TESTING=True)
    with session_scope(session_factory(app.extensions["mprtm.engine"])) as db:
        add_user(db, "root-admin", "admin", "correct horse battery")
        add_user(db, "dr-lee", "clinician", "correct horse battery")
        would = sum(
            len(r.would_alert)
            for r in db.scalars(
                select(ShadowPrediction).where(ShadowPrediction.model_version_id == shadow_id)
            )
        )
    admin = app.test_client()
    assert login(admin, "root-admin", "correct horse battery").status_code == 302
    page = admin.get("/inbox/admin/registry").get_data(as_text=True)
    assert f"Shadow version {shadow_id} ({shadow_version})" in page
    assert f"{N_PATIENTS} paired predictions" in page
    assert f'would have raised</th><td class="num">{would}</td>' in page
    assert "Tier changes" in page and "High-tier flag rate by subgroup" in page
    clinician = app.test_client()
    assert login(clinician, "dr-lee", "correct horse battery").status_code == 302
    assert clinician.get("/inbox/admin/registry").status_code == 403
    inbox = clinician.get("/inbox/").get_data(as_text=True)
    assert shadow_version not in inbox
    app.extensions["mprtm.engine"].dispose()


def _ras(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_shadow_is_scored_stored_apart_and_silent(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path, other_checkpoint: Path
) -> None:
    # alerts on every high tier and on a low threshold: both models would raise some
    # both nights score everyone (the incremental night would skip the unchanged patients)
    s = batch_settings(
        tmp_path, cohort_dir, checkpoint, alerts__threshold=0.01, batch__incremental=False
    )
    sessions = session_factory(make_engine(s.database.url))
    runner = BatchRunner(s)
    first = runner.run(RunOptions(as_of=AS_OF, progress=False, run_date=dt.date(2026, 11, 2)))
    assert first.n_done == N_PATIENTS  # bootstrapped: [model] checkpoint is active
    with session_scope(sessions) as db:
        active = db.scalars(select(ModelVersion)).one()
        assert active.state == "active"
        active_id, active_version = active.id, active.version
        shadow = register(db, other_checkpoint, actor="test")
        promote(db, shadow.id, "shadow", limits=RegistrySettings(), actor="test")
        shadow_id, shadow_version = shadow.id, shadow.version
    ra_path = Path(s.fhir.writeback_path)
    n_ras_before = len(_ras(ra_path))

    second = runner.run(RunOptions(as_of=AS_OF, progress=False, run_date=dt.date(2026, 11, 3)))
    assert second.n_done == N_PATIENTS and "shadow" in second.timings
    ras = _ras(ra_path)[n_ras_before:]
    assert len(ras) == N_PATIENTS  # one RiskAssessment per patient: the active version's
    for ra in ras:
        assert ra["method"]["coding"][0]["version"] == active_version
        assert ra["identifier"][0]["value"].startswith(active_version + ":")
    with session_scope(sessions) as db:
        preds = db.scalars(select(Prediction).where(Prediction.run_id == second.run_id)).all()
        assert {p.model_version_id for p in preds} == {active_id}
        shadows = db.scalars(
            select(ShadowPrediction).where(ShadowPrediction.run_id == second.run_id)
        ).all()
        assert len(shadows) == N_PATIENTS
        assert {r.model_version_id for r in shadows} == {shadow_id}
        by_patient = {p.patient.fhir_id: p.probabilities for p in preds}
        differs = [r for r in shadows if r.probabilities != by_patient[r.patient_fhir_id]]
        assert differs, "the shadow model scores differently from the active one"
        ra_probs = {
            ra["subject"]["reference"].split("/")[1]: ra["prediction"][0]["probabilityDecimal"]
            for ra in ras
        }
        for p in preds:  # the written-back numbers are the active version's
            assert ra_probs[p.patient.fhir_id] == p.probabilities["death"]
        assert any(r.would_alert for r in shadows)
        alerts = db.scalars(select(Alert)).all()
        pred_ids = {p.id for p in db.scalars(select(Prediction))}
        assert all(a.prediction_id in pred_ids for a in alerts)  # alerts come only from Predictions

    _comparison_page_shows(s, shadow_id, shadow_version, active_version)

    # promotion (forced: no validation stored) reaches the running runner at its next run
    with session_scope(sessions) as db:
        promote(db, shadow_id, "active", limits=RegistrySettings(), actor="test", force=True,
                reason="test of the pick-up")  # fmt: skip
    third = runner.run(RunOptions(as_of=AS_OF, progress=False, run_date=dt.date(2026, 11, 4)))
    assert third.n_done == N_PATIENTS
    ras = _ras(ra_path)[-N_PATIENTS:]
    assert {ra["method"]["coding"][0]["version"] for ra in ras} == {shadow_version}
    with session_scope(sessions) as db:
        preds = db.scalars(select(Prediction).where(Prediction.run_id == third.run_id)).all()
        assert {p.model_version_id for p in preds} == {shadow_id}
        assert not db.scalars(
            select(ShadowPrediction).where(ShadowPrediction.run_id == third.run_id)
        ).all()
    runner.close()
