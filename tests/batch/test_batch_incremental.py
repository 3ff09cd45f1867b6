"""The incremental nightly on the embedded default (NDJSON folder, DICOM folder, SQLite):
an unchanged patient is checked, not scored; a new observation or note, or another model
version, makes the batch score again; the batch and CDS Hooks fingerprints agree."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from cds.batch.runner import BatchRunner, RunOptions
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import (
    Alert,
    BatchItem,
    ModelVersion,
    Patient,
    Prediction,
    SegmentEmbedding,
)
from cds.hooks.model_scorer import ModelScorer
from cds.pipeline import pull_record
from cds.scoring import latest_batch_predictions, latest_cached_image
from cds.sources import make_fhir_source
from tests.batch.conftest import AS_OF, N_PATIENTS, batch_settings

DAY1 = AS_OF.date()


def _opts(day: int) -> RunOptions:
    return RunOptions(run_date=DAY1 + dt.timedelta(days=day), as_of=AS_OF, progress=False)


def _n_ras(path: Path) -> int:
    return len(path.read_text().splitlines())


def _first_of(fhir: Path, resource: str, patient: str) -> dict:
    for line in (fhir / f"{resource}.ndjson").read_text().splitlines():
        res = json.loads(line)
        if res.get("subject", {}).get("reference") == f"Patient/{patient}":
            return res
    raise AssertionError(f"no {resource} of Patient/{patient} in the cohort")


def _append(fhir: Path, resource: str, res: dict) -> None:
    with (fhir / f"{resource}.ndjson").open("a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")


@pytest.fixture
def own_cohort(cohort_dir: Path, tmp_path: Path) -> Path:
    """A copy of the cohort this test may change."""
    out = tmp_path / "cohort"
    shutil.copytree(cohort_dir, out)
    return out


def test_unchanged_patients_are_checked_and_changed_ones_scored(
    tmp_path: Path, own_cohort: Path, checkpoint: Path
) -> None:
    s = batch_settings(tmp_path, own_cohort, checkpoint)
    ra_path = Path(s.fhir.writeback_path)
    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    with BatchRunner(s) as runner:
        first = runner.run(_opts(0))
        assert first.n_done == N_PATIENTS and first.n_unchanged == 0
        with session_scope(sessions) as db:
            n_alerts = db.scalar(select(func.count()).select_from(Alert))
            assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS
            assert db.scalar(select(func.count()).where(Prediction.checked_at.is_not(None))) == 0

        # the next night, nothing new: every patient checked, nobody scored
        second = runner.run(_opts(1))
        assert second.run_id != first.run_id
        assert second.n_unchanged == N_PATIENTS and second.n_done == 0 and second.n_failed == 0
        assert second.as_dict()["n_unchanged"] == N_PATIENTS
        assert _n_ras(ra_path) == N_PATIENTS  # no RiskAssessment written
        with session_scope(sessions) as db:
            assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS
            assert db.scalar(select(func.count()).select_from(Alert)) == n_alerts
            items = list(db.scalars(select(BatchItem).where(BatchItem.run_id == second.run_id)))
            assert {i.status for i in items} == {"unchanged"} and len(items) == N_PATIENTS
            preds = list(db.scalars(select(Prediction)))
            assert all(p.checked_at is not None for p in preds)
            assert all(p.run_id == first.run_id for p in preds)
            ids = list(db.scalars(select(Patient.fhir_id)))

        # a resume of the same night does not score the unchanged patients either
        again = runner.run(_opts(1))
        assert again.n_unchanged == N_PATIENTS and again.n_done == 0
        assert _n_ras(ra_path) == N_PATIENTS

        # one patient gets a new observation, another a new note
        fhir = own_cohort / "fhir"
        obs_patient, note_patient = sorted(ids)[:2]
        obs = _first_of(fhir, "Observation", obs_patient)
        obs["id"] = "incremental-new-obs"
        obs["effectiveDateTime"] = (AS_OF - dt.timedelta(hours=5)).isoformat()
        obs.pop("effectivePeriod", None)
        quantity = obs.get("valueQuantity")
        assert quantity is not None, "the first observation of a synthetic patient has a value"
        quantity["value"] = float(quantity["value"]) * 1.37 + 1
        _append(fhir, "Observation", obs)
        note = _first_of(fhir, "DocumentReference", note_patient)
        note["id"] = "incremental-new-note"
        note["date"] = (AS_OF - dt.timedelta(hours=4)).isoformat()
        _append(fhir, "DocumentReference", note)
    with BatchRunner(s) as runner:  # the NDJSON folder is indexed when a source opens
        third = runner.run(_opts(2))
    assert third.n_done == 2 and third.n_unchanged == N_PATIENTS - 2 and third.n_failed == 0
    assert _n_ras(ra_path) == N_PATIENTS + 2
    with session_scope(sessions) as db:
        scored = set(
            db.scalars(
                select(Patient.fhir_id)
                .join(Prediction, Prediction.patient_id == Patient.id)
                .where(Prediction.run_id == third.run_id)
            )
        )
        assert scored == {obs_patient, note_patient}
        assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS + 2
    engine.dispose()


def test_another_model_version_rescores_everyone(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    s = batch_settings(tmp_path, cohort_dir, checkpoint)
    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    with BatchRunner(s) as runner:
        first = runner.run(_opts(0))
        assert first.n_done == N_PATIENTS
        with session_scope(sessions) as db:  # the newest predictions came from another model
            other = ModelVersion(
                name="m-prtm", version="older", checkpoint_sha256="0" * 64, checkpoint_path="x"
            )
            db.add(other)
            db.flush()
            db.execute(update(Prediction).values(model_version_id=other.id))
        second = runner.run(_opts(1))
    assert second.n_done == N_PATIENTS and second.n_unchanged == 0
    assert _n_ras(Path(s.fhir.writeback_path)) == 2 * N_PATIENTS
    engine.dispose()


def test_incremental_off_scores_everyone(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    """... and the second night finds every text segment in the database's cache."""
    s = batch_settings(tmp_path, cohort_dir, checkpoint, batch__incremental=False)
    engine = make_engine(s.database.url)

    def n_segments() -> int:
        with engine.connect() as c:
            return int(c.scalar(select(func.count()).select_from(SegmentEmbedding)) or 0)

    with BatchRunner(s) as runner:
        runner.run(_opts(0))
        n_first = n_segments()
        second = runner.run(_opts(1))
    assert second.n_done == N_PATIENTS and second.n_unchanged == 0
    assert n_first > N_PATIENTS and n_segments() == n_first
    engine.dispose()


def test_batch_and_hooks_compute_the_same_fingerprint(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    """The on-demand path (the record without pixels, the image from the cache table)
    fingerprints a patient as the nightly batch (pixels from the DICOM folder) did."""
    s = batch_settings(tmp_path, cohort_dir, checkpoint)
    with BatchRunner(s) as runner:
        assert runner.run(_opts(0)).n_done == N_PATIENTS
    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    scorer = ModelScorer(s)
    source = make_fhir_source(s)
    n_with_image = 0
    with session_scope(sessions) as db:
        ids = list(db.scalars(select(Patient.fhir_id)))
        latest = latest_batch_predictions(db, ids)
        version = scorer.info().image_cache_key
        for pid in ids:
            record = pull_record(pid, source, as_of=AS_OF.date(), settings=s)
            image = latest_cached_image(db, pid, version)
            n_with_image += image is not None
            got = scorer.score(record, image, AS_OF)
            assert got.input_fingerprint == latest[pid].input_fingerprint, pid
    source.close()
    engine.dispose()
    assert n_with_image > 0
