"""The nightly follow-up batch: cohort -> pull -> map -> predict -> write back -> alerts.

Resumable and idempotent:

- a run is identified by ``run_key`` (cohort, model version, run date, or a scheduler tick);
  every cohort patient gets a :class:`BatchItem` row at the start;
- a patient is marked ``done`` in the same transaction that stores its prediction and
  alerts, after its RiskAssessment was written (by identifier, so a rewrite is an update);
- running the same ``run_key`` again (after SIGKILL, say) does only the items not done;
- a patient whose inputs and model version are those of their newest prediction is marked
  ``unchanged`` and not scored again (``[batch] incremental``; :mod:`cds.scoring.unchanged`);
- one patient's failure is recorded on its item (reason, no PHI) and the batch goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from cds.batch import _scoring
from cds.batch.lock import batch_lock
from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import BatchItem, BatchRun, ModelVersion, Prediction
from cds.errors import MprtmError
from cds.image_gate import is_unusable
from cds.scoring import ScoringCore
from cds.sources import expand_cohort
from cds.terminology import activate as activate_terminology

log = logging.getLogger("mprtm.batch")


class BatchError(MprtmError):
    """The batch as a whole could not run (lock held, cohort unreadable, no model)."""


@dataclass
class RunOptions:
    """Args:
    limit: score at most this many cohort patients (in cohort order).
    run_date: the run's date (default: today, UTC); part of RiskAssessment identifiers.
    run_key: explicit key (the scheduler passes its tick); default from cohort/model/date.
    as_of: the clinical as-of time for the observation window (default: now).
    progress: show a progress bar.
    patient_ids: score these patients instead of the cohort (the study-arrival listener).
    """

    limit: int | None = None
    run_date: dt.date | None = None
    run_key: str | None = None
    as_of: dt.datetime | None = None
    progress: bool = True
    patient_ids: list[str] | None = None


@dataclass
class RunSummary:
    run_id: int
    run_key: str
    status: str
    n_total: int
    n_done: int
    n_failed: int
    n_alerts: int
    n_skipped_already_done: int
    #: patients whose LGE series failed the image quality gate (scored without the image)
    n_image_unusable: int = 0
    #: alerts raised by this attempt (``n_alerts`` counts every attempt of the run)
    n_new_alerts: int = 0
    #: patients not scored again: inputs and model version as at their newest prediction
    n_unchanged: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_key": self.run_key,
            "status": self.status,
            "n_total": self.n_total,
            "n_done": self.n_done,
            "n_failed": self.n_failed,
            "n_alerts": self.n_alerts,
            "n_skipped_already_done": self.n_skipped_already_done,
            "n_image_unusable": self.n_image_unusable,
            "n_new_alerts": self.n_new_alerts,
            "n_unchanged": self.n_unchanged,
            "failures": self.failures,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


class StageTimer:
    """Wall time per pipeline stage, summed over patients."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - t0

    def merge(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.totals[k] += v


def register_model_version(session: Session, core: ScoringCore) -> ModelVersion:
    """The ModelVersion row of the loaded checkpoint (created once)."""
    mv = session.scalar(
        select(ModelVersion).where(ModelVersion.checkpoint_sha256 == core.checkpoint_sha256)
    )
    if mv is None:
        mv = ModelVersion(
            name=core.model_name,
            version=core.model_version,
            checkpoint_sha256=core.checkpoint_sha256,
            checkpoint_path=str(core.checkpoint_path),
            metrics=core.metrics,
            card_markdown=core.card_markdown,
            synthetic_training_data=core.synthetic_training_data,
        )
        session.add(mv)
        session.flush()
    return mv


class BatchRunner:
    """Runs one batch (``run``); the scheduler and ``mprtm batch run`` both use it.

    Args:
        settings: effective settings.
        scorer: the per-chunk scoring machinery (sources, predictor, writer); built from
            ``settings`` when omitted.
        engine: database engine; built from ``settings`` when omitted.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        scorer: _scoring.Scorer | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine = engine or make_engine(settings.database.url)
        activate_terminology(settings)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self._owns_scorer = scorer is None
        self._scorer = scorer

    def close(self) -> None:
        """Close what this runner opened (sources of a scorer it built, the engine)."""
        if self._scorer is not None and self._owns_scorer:
            self._scorer.close()
            self._scorer = None
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def scorer(self) -> _scoring.Scorer:
        if self._scorer is None:
            self._scorer = _scoring.Scorer.from_settings(self.settings)
        return self._scorer

    def _follow_registry(self) -> None:
        """Drop a scorer this runner built when a promotion has changed the active version
        since it loaded (the next use loads the new one: no restart needed)."""
        from cds.registry_serving import active_sha256

        if self._scorer is None or not self._owns_scorer:
            return
        sha = active_sha256(self.settings, self.engine)
        if sha is not None and sha != self._scorer.core.checkpoint_sha256:
            log.info("active model version changed: loading it")
            self._scorer.close()
            self._scorer = None

    def default_run_key(self, run_date: dt.date) -> str:
        return f"{self.settings.batch.cohort}|{self.scorer.model_version}|{run_date.isoformat()}"

    def run(self, opts: RunOptions | None = None) -> RunSummary:
        """Run (or resume) one batch under the database lock."""
        opts = opts or RunOptions()
        lock_name = f"mprtm-batch:{self.settings.batch.cohort}"
        with batch_lock(self.engine, lock_name, self.settings.batch.lock_file) as held:
            if not held:
                raise BatchError(
                    f"another process holds the batch lock for cohort "
                    f"{self.settings.batch.cohort!r}; not starting a second run"
                )
            return self._run_locked(opts)

    def _run_locked(self, opts: RunOptions) -> RunSummary:
        t_start = time.perf_counter()
        timer = StageTimer()
        run_date = opts.run_date or dt.datetime.now(dt.UTC).date()
        as_of = opts.as_of or dt.datetime.now(dt.UTC)
        self._follow_registry()
        scorer = self.scorer
        run_key = opts.run_key or self.default_run_key(run_date)
        with session_scope(self.sessions) as s:
            mv = register_model_version(s, scorer.core)
            run = s.scalar(select(BatchRun).where(BatchRun.run_key == run_key))
            resumed = run is not None
            if run is None:
                run = BatchRun(
                    run_key=run_key,
                    run_date=run_date,
                    cohort=self.settings.batch.cohort,
                    executor=self.settings.batch.executor,
                    model_version_id=mv.id,
                    status="running",
                )
                s.add(run)
                s.flush()
            run_id = run.id
            n_open = 0
            if resumed:
                n_open = len(
                    s.scalars(
                        select(BatchItem.id).where(
                            BatchItem.run_id == run_id, BatchItem.status.not_in(_scoring.FINISHED)
                        )
                    ).all()
                )
            if resumed and n_open == 0 and run.status != "running":
                return self._nothing_to_do(run, time.perf_counter() - t_start)
            if resumed:
                run.attempts += 1
                run.status = "running"
                run.finished_at = None
        log.info("batch run %s (%s) %s", run_id, run_key, "resumed" if resumed else "started")

        with timer.stage("cohort"):
            if resumed:
                with session_scope(self.sessions) as s:
                    ids = list(
                        s.scalars(
                            select(BatchItem.patient_fhir_id)
                            .where(BatchItem.run_id == run_id)
                            .order_by(BatchItem.id)
                        )
                    )
            else:
                ids = (
                    list(opts.patient_ids)
                    if opts.patient_ids is not None
                    else scorer.cohort_patient_ids(
                        expand_cohort(self.settings.batch.cohort, as_of.date())
                    )
                )
                if opts.limit is not None:
                    ids = ids[: opts.limit]
                with session_scope(self.sessions) as s:
                    s.add_all(BatchItem(run_id=run_id, patient_fhir_id=pid) for pid in ids)
                    s.get_one(BatchRun, run_id).n_total = len(ids)
        with session_scope(self.sessions) as s:
            todo = list(
                s.scalars(
                    select(BatchItem.patient_fhir_id)
                    .where(BatchItem.run_id == run_id, BatchItem.status.not_in(_scoring.FINISHED))
                    .order_by(BatchItem.id)
                )
            )
        skipped = len(ids) - len(todo)
        n_alerts = 0
        ctx = _scoring.RunContext(
            run_id=run_id, run_date=run_date, as_of=as_of, model_version_id=mv.id
        )
        chunks = [
            todo[i : i + self.settings.batch.chunk_size]
            for i in range(0, len(todo), self.settings.batch.chunk_size)
        ]
        dispatch = self._dispatcher()
        for result in dispatch(ctx, chunks, opts.progress):
            timer.merge(result.timings)
            n_alerts += result.n_alerts
        scorer.finish()

        with session_scope(self.sessions) as s:
            run = s.get_one(BatchRun, run_id)
            items = list(s.scalars(select(BatchItem).where(BatchItem.run_id == run_id)))
            failures = {i.patient_fhir_id: i.error or "" for i in items if i.status == "failed"}
            n_done = sum(1 for i in items if i.status == "done")
            n_unchanged = sum(1 for i in items if i.status == "unchanged")
            n_unusable = sum(
                is_unusable(q)
                for q in s.scalars(
                    select(Prediction.image_quality).where(Prediction.run_id == run_id)
                )
            )
            timer.totals["total"] = time.perf_counter() - t_start
            run.n_done = n_done
            run.n_failed = len(failures)
            run.n_alerts = (run.n_alerts or 0) + n_alerts
            if resumed:  # the stages of every attempt that did work, added up
                for k, v in (run.timings or {}).items():
                    if isinstance(v, int | float):
                        timer.totals[k] += float(v)
            run.timings = {k: round(v, 3) for k, v in timer.totals.items()}
            run.status = "completed" if not failures else "completed_with_failures"
            run.finished_at = dt.datetime.now(dt.UTC)
            summary = RunSummary(
                run_id=run_id,
                run_key=run_key,
                status=run.status,
                n_total=len(items),
                n_done=n_done,
                n_failed=len(failures),
                n_alerts=run.n_alerts,
                n_skipped_already_done=skipped,
                n_image_unusable=n_unusable,
                n_new_alerts=n_alerts,
                n_unchanged=n_unchanged,
                failures=failures,
                timings=dict(timer.totals),
            )
            run.summary = summary.as_dict()
        log.info(
            "batch run %s finished: %s done, %s failed, %s new alerts, %s MRI series not usable",
            run_id,
            summary.n_done,
            summary.n_failed,
            n_alerts,
            n_unusable,
        )
        return summary

    def _nothing_to_do(self, run: BatchRun, elapsed: float) -> RunSummary:
        """A resumed run whose patients are all done: reported, and the stored record of
        the attempts that did the work (summary, timings, duration) is left as it is."""
        log.info("batch run %s (%s): every patient already done", run.id, run.run_key)
        stored = dict(run.summary or {})
        return RunSummary(
            run_id=run.id,
            run_key=run.run_key,
            status=run.status,
            n_total=run.n_total,
            n_done=run.n_done,
            n_failed=run.n_failed,
            n_alerts=run.n_alerts or 0,
            n_skipped_already_done=run.n_total,
            n_image_unusable=int(stored.get("n_image_unusable", 0)),
            n_unchanged=int(stored.get("n_unchanged", 0)),
            failures={},
            timings={"total": elapsed},
        )

    def _dispatcher(
        self,
    ) -> Callable[[_scoring.RunContext, Sequence[list[str]], bool], Iterator[_scoring.ChunkResult]]:
        if self.settings.batch.executor == "celery":
            from cds.batch.celery_app import dispatch_chunks

            return lambda ctx, chunks, progress: dispatch_chunks(
                self.settings, ctx, chunks, progress
            )
        return self._local_dispatch

    def _local_dispatch(
        self, ctx: _scoring.RunContext, chunks: Sequence[list[str]], progress: bool
    ) -> Iterator[_scoring.ChunkResult]:
        from tqdm import tqdm

        total = sum(len(c) for c in chunks)
        with tqdm(total=total, unit="patient", desc="batch", disable=not progress) as bar:
            if self.settings.batch.overlap and len(chunks) > 1:
                results = self._overlapped(ctx, chunks)
            else:
                results = (self.scorer.score_chunk(self.sessions, ctx, c) for c in chunks)
            for chunk, result in zip(chunks, results, strict=True):
                bar.update(len(chunk))
                bar.set_postfix(failed=result.n_failed, alerts=result.n_alerts)
                yield result

    def _overlapped(
        self, ctx: _scoring.RunContext, chunks: Sequence[list[str]]
    ) -> Iterator[_scoring.ChunkResult]:
        """Chunk k is predicted here while chunk k+1 is pulled and mapped in one thread and
        chunk k-1 is written back and stored in another.  Each patient is still marked
        done in its own transaction after its RiskAssessment was written, so a kill loses
        at most the work in flight and the next run does it again."""
        from concurrent.futures import Future, ThreadPoolExecutor

        scorer = self.scorer
        with (
            ThreadPoolExecutor(1, thread_name_prefix="batch-pull") as pulling,
            ThreadPoolExecutor(1, thread_name_prefix="batch-write") as writing,
        ):
            nxt = pulling.submit(scorer.prepare_chunk, self.sessions, ctx, chunks[0])
            written: Future[_scoring.ChunkResult] | None = None
            for k in range(len(chunks)):
                chunk = nxt.result()
                if k + 1 < len(chunks):
                    nxt = pulling.submit(scorer.prepare_chunk, self.sessions, ctx, chunks[k + 1])
                scorer.predict_chunk(self.sessions, chunk)
                if written is not None:
                    yield written.result()
                written = writing.submit(scorer.store_chunk, self.sessions, ctx, chunk)
            if written is not None:
                yield written.result()
