"""The overlapped local batch: chunk k+1 pulled and chunk k-1 stored in their own threads
while chunk k is predicted, with the same stored results as one stage after the other."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select

from cds.batch._scoring import Chunk, ChunkResult, RunContext, Scorer
from cds.batch.runner import BatchRunner, RunOptions
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import BatchItem, Patient, Prediction
from tests.batch.conftest import AS_OF, GHOST, N_PATIENTS, batch_settings


class ThreadRecordingScorer(Scorer):
    """The real scorer, noting which thread ran each stage."""

    stages: list[tuple[str, str]]

    def prepare_chunk(self, sessions, ctx: RunContext, patient_ids: list[str]) -> Chunk:  # type: ignore[no-untyped-def]
        self.stages.append(("prepare", threading.current_thread().name))
        return super().prepare_chunk(sessions, ctx, patient_ids)

    def predict_chunk(self, sessions, chunk: Chunk) -> None:  # type: ignore[no-untyped-def]
        self.stages.append(("predict", threading.current_thread().name))
        super().predict_chunk(sessions, chunk)

    def store_chunk(self, sessions, ctx: RunContext, chunk: Chunk) -> ChunkResult:  # type: ignore[no-untyped-def]
        self.stages.append(("store", threading.current_thread().name))
        return super().store_chunk(sessions, ctx, chunk)


def _probabilities(url: str) -> dict[str, dict[str, float]]:
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        rows = s.execute(
            select(Patient.fhir_id, Prediction.probabilities).join(
                Prediction, Prediction.patient_id == Patient.id
            )
        ).all()
    engine.dispose()
    return {pid: dict(p) for pid, p in rows}


def test_overlapped_batch_stores_what_the_serial_one_does(
    tmp_path: Path, broken_cohort_dir: Path, broken_patient_id: str, checkpoint: Path
) -> None:
    results = {}
    for overlap in (False, True):
        folder = tmp_path / ("overlap" if overlap else "serial")
        folder.mkdir()
        s = batch_settings(
            folder, broken_cohort_dir, checkpoint, batch__overlap=overlap, batch__chunk_size=3
        )
        base = Scorer.from_settings(s)
        scorer = ThreadRecordingScorer(
            s,
            core=base.core,
            fhir_source=base.fhir,
            imaging_source=base.imaging,
            writer=base.writer,
        )
        scorer.stages = []
        with BatchRunner(s, scorer=scorer) as runner:
            summary = runner.run(RunOptions(as_of=AS_OF, progress=False))
        scorer.close()  # the sources and writer it shares with base
        base.audit.close()
        # per-patient failure isolation is the same either way
        assert summary.n_done == N_PATIENTS - 1
        assert set(summary.failures) == {GHOST, broken_patient_id}
        threads = {(stage, name.split("_")[0]) for stage, name in scorer.stages}
        if overlap:
            assert threads == {
                ("prepare", "batch-pull"),
                ("predict", "MainThread"),
                ("store", "batch-write"),
            }
        else:
            assert {name for _, name in threads} == {"MainThread"}
        engine = make_engine(s.database.url)
        with session_scope(session_factory(engine)) as db:
            items = list(db.scalars(select(BatchItem)))
            assert sum(i.status == "done" for i in items) == N_PATIENTS - 1
        engine.dispose()
        results[overlap] = _probabilities(s.database.url)
    assert results[True] == results[False] and len(results[True]) == N_PATIENTS - 1
