"""The batch end to end on the embedded default: NDJSON folder, DICOM folder, SQLite,
RiskAssessments to NDJSON (the kill-and-resume test also on PostgreSQL).  A tiny model
trained on the same cohort does the scoring."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import func, select

from cds.batch.runner import BatchRunner, RunOptions
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Alert, BatchItem, BatchRun, ImageFeatureCache, Patient, Prediction
from cds.scoring import StoredInputs
from tests.batch.conftest import AS_OF, GHOST, N_PATIENTS, batch_settings, write_config

REPO = Path(__file__).resolve().parents[2]


def _ras(path: Path) -> list[RiskAssessment]:
    return [RiskAssessment.model_validate(json.loads(x)) for x in path.read_text().splitlines()]


def test_batch_scores_everyone_reports_broken_and_reruns_idempotently(
    tmp_path: Path, broken_cohort_dir: Path, broken_patient_id: str, checkpoint: Path
) -> None:
    s = batch_settings(tmp_path, broken_cohort_dir, checkpoint)
    runner = BatchRunner(s)
    first = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert first.n_total == N_PATIENTS + 1
    assert first.n_done == N_PATIENTS - 1
    assert set(first.failures) == {GHOST, broken_patient_id}
    assert "ResourceNotFound" in first.failures[GHOST]
    assert first.status == "completed_with_failures"
    assert {"pull", "map", "image", "predict", "write", "store", "total"} <= set(first.timings)

    ra_path = Path(s.fhir.writeback_path)
    ras = _ras(ra_path)
    assert len(ras) == N_PATIENTS - 1
    subjects = {r.subject.reference for r in ras}
    assert len(subjects) == len(ras) and f"Patient/{GHOST}" not in subjects
    for ra in ras:
        assert ra.status == "final" and len(ra.prediction) == 5
        assert ra.performer.reference.startswith("Device/")
        assert any(b.reference.startswith("Observation/") for b in ra.basis)
    with_image = [r for r in ras if any(b.reference.startswith("ImagingStudy/") for b in r.basis)]
    assert with_image, "some patients have an LGE study in the basis"

    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    with session_scope(sessions) as db:
        assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS - 1
        run = db.scalar(select(BatchRun))
        assert run is not None and run.summary["failures"].keys() == first.failures.keys()
        n_cached = db.scalar(select(func.count()).select_from(ImageFeatureCache))
        assert n_cached and n_cached == len(with_image)
        cached = db.scalars(select(ImageFeatureCache)).first()
        assert cached is not None and cached.overlay_png and cached.overlay_png[:4] == b"\x89PNG"
        pred = db.scalars(select(Prediction)).first()
        assert pred is not None and pred.inputs["version"] == 2
        stored = StoredInputs.from_json(pred.inputs)
        groups = {g for g, _ in stored.grouped()}
        assert {"demographics", "vital", "lab", "echo"} <= groups, groups
        assert all(i.unit for i in stored.items if i.group in ("vital", "lab", "echo"))
        patient = db.get(Patient, pred.patient_id)
        assert patient is not None and patient.identifier  # the MRN the inbox searches
        assert abs(sum(pred.modality_weights.values()) - 1) < 1e-4
        for outcome, p in pred.probabilities.items():  # the stored parts add up (rounded)
            assert abs(sum(pred.contributions[outcome].values()) - p) < 5e-4
        n_alerts = db.scalar(select(func.count()).select_from(Alert))
    assert n_alerts == first.n_alerts

    # Same day again: nothing new is written; failed patients are retried (and fail again).
    second = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert second.run_id == first.run_id
    assert second.n_skipped_already_done == N_PATIENTS - 1
    assert second.n_done == N_PATIENTS - 1 and second.n_failed == 2
    assert len(_ras(ra_path)) == N_PATIENTS - 1
    with session_scope(sessions) as db:
        assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS - 1
        assert db.scalar(select(func.count()).select_from(Alert)) == n_alerts
        assert db.scalar(select(func.count()).select_from(ImageFeatureCache)) == n_cached
    engine.dispose()
    runner.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_killed_run_is_finished_by_the_next_run(
    backend: str, tmp_path: Path, cohort_dir: Path, checkpoint: Path, request: Any
) -> None:
    """SIGKILL mid-run, then a new run: on PostgreSQL the killed process's advisory lock
    goes with its connection, so the next run is not locked out."""
    extra: dict[str, Any] = {}
    if backend == "postgres":
        extra["database__url"] = request.getfixturevalue("pg_url")
    s = batch_settings(
        tmp_path, cohort_dir, checkpoint, batch__chunk_size=1, batch__cohort="all", **extra
    )
    cfg = write_config(tmp_path / "batch.toml", s)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPRTM_")}
    log = (tmp_path / "killed-run.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "--config",
            str(cfg),
            "batch",
            "run",
            "--no-progress",
            "--date",
            AS_OF.date().isoformat(),
            "--as-of",
            AS_OF.date().isoformat(),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with session_scope(sessions) as db:
            done = (
                db.scalar(
                    select(func.count()).select_from(BatchItem).where(BatchItem.status == "done")
                )
                or 0
            )
        if done >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(30)
    log.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with session_scope(sessions) as db:
        run = db.scalar(select(BatchRun))
        assert run is not None and run.status == "running"
        killed_done = db.scalar(
            select(func.count()).select_from(BatchItem).where(BatchItem.status == "done")
        )
    assert killed_done is not None and 2 <= killed_done < N_PATIENTS

    with BatchRunner(s) as runner:
        summary = runner.run(RunOptions(run_date=AS_OF.date(), as_of=AS_OF, progress=False))
    assert summary.n_done == N_PATIENTS and summary.n_failed == 0
    assert summary.n_skipped_already_done == killed_done
    with session_scope(sessions) as db:
        items = list(db.scalars(select(BatchItem)))
        assert len(items) == N_PATIENTS
        assert all(i.status == "done" and i.attempts == 1 for i in items)
        assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS
    ras = _ras(Path(s.fhir.writeback_path))
    assert len(ras) == N_PATIENTS
    assert len({r.identifier[0].value for r in ras}) == N_PATIENTS
    engine.dispose()


def test_relative_cohort_is_expanded_and_a_do_nothing_resume_keeps_the_record(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    """``{as_of-Nd}`` in ``[batch] cohort`` is expanded against the run's as-of day before the
    source sees it; running a finished run again changes nothing stored about it."""
    from cds.sources import expand_cohort, make_fhir_source
    from connectors.errors import ConnectorError

    query = "search:Encounter?date=ge{as_of-400d}"
    s = batch_settings(tmp_path, cohort_dir, checkpoint, batch__cohort=query)
    source = make_fhir_source(s)
    try:
        expected = source.cohort_patient_ids(expand_cohort(query, AS_OF.date()))
        with pytest.raises((ConnectorError, ValueError)):  # the raw placeholder is no date
            source.cohort_patient_ids(query)
    finally:
        source.close()
    assert expected
    with BatchRunner(s) as runner:
        first = runner.run(RunOptions(as_of=AS_OF, progress=False, limit=2))
        assert first.n_done == 2
        engine = make_engine(s.database.url)
        sessions = session_factory(engine)
        with session_scope(sessions) as db:
            items = db.scalars(select(BatchItem.patient_fhir_id).order_by(BatchItem.id)).all()
            run = db.scalars(select(BatchRun)).one()
            stored = (dict(run.summary), dict(run.timings), run.finished_at, run.attempts)
        assert list(items) == expected[:2]
        again = runner.run(RunOptions(as_of=AS_OF, progress=False, limit=2))
    assert again.run_id == first.run_id and again.n_skipped_already_done == 2
    with session_scope(sessions) as db:
        run = db.scalars(select(BatchRun)).one()
        assert (dict(run.summary), dict(run.timings), run.finished_at, run.attempts) == stored
        assert run.summary["n_skipped_already_done"] == 0  # the attempt that did the work
    engine.dispose()
