"""Scoring one chunk of patients: the batch's adapter around :mod:`cds.scoring`.

Steps and their named inputs/outputs:

1. ``pull``: patient id -> :class:`connectors.fhir.base.PatientRecord`
   (:func:`cds.pipeline.pull_record`);
2. ``map``: record (+ imaging source) -> :class:`cds.mapping.MappedPatient`
   (:func:`cds.pipeline.assemble`: features, text, LGE volume, basis, warnings);
3. ``image``: LGE volume -> :class:`model.types.ImageFeatures`, from the image cache when
   the series fingerprint is known under this model version, else the image branch
   (both through :class:`cds.scoring.ScoringCore`);
4. ``predict``: ModelInputs -> :class:`cds.scoring.Scored` (batched; rounding, tiers,
   fingerprint and stored inputs by the core);
5. ``write``: score -> RiskAssessment (by identifier) via the configured writer;
6. ``store``: Prediction row (:func:`cds.scoring.fill_prediction`), alert rules, item
   marked done; one transaction per patient.

The same code runs in process (executor "local") and in Celery workers.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.audit import make_auditor, patient_read_event, resource_write_event
from cds.batch._shadow import ShadowPass
from cds.batch.alerts import apply_findings, evaluate_rules
from cds.batch.fhir_out import build_device, build_risk_assessment, ra_identifier_value
from cds.batch.writeback import NdjsonWriter, NullWriter, Writer
from cds.canonical import canonical
from cds.config import Settings
from cds.db import session_scope
from cds.db.models import BatchItem, Patient, Prediction
from cds.explain import stored_contributions
from cds.imaging_writeback import ResultsWriter, make_results_writer
from cds.mapping import MappedPatient
from cds.scoring import (
    Scored,
    ScoringCore,
    fill_prediction,
    input_fingerprint,
    unchanged_predictions,
)
from model.types import ImageFeatures, PatientPrediction

log = logging.getLogger("mprtm.batch")
#: BatchItem states a resumed run does not do again
FINISHED = ("done", "unchanged")
AUDIT_ACTOR = "M-PRTM CDS batch"


@dataclass(frozen=True)
class RunContext:
    run_id: int
    run_date: dt.date
    as_of: dt.datetime
    model_version_id: int


@dataclass
class ChunkResult:
    n_done: int = 0
    n_failed: int = 0
    n_alerts: int = 0
    #: patients whose inputs and model version were those of their newest prediction
    n_unchanged: int = 0
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class Chunk:
    """One chunk between the stages of :class:`Scorer` (prepare -> predict -> store).

    Args:
        patient_ids: the chunk's patients, in cohort order.
        mapped: mapped patients still to be scored, by id.
        errors: failure reasons by patient id (ids only).
        unchanged: patients found unchanged (not scored).
        preds: predictions (or the error of that patient) by id, after the predict stage.
        result: counts and stage timings.
        ctx: the run the chunk belongs to (the shadow pass stores under it).
    """

    patient_ids: list[str]
    mapped: dict[str, MappedPatient] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    unchanged: set[str] = field(default_factory=set)
    ctx: RunContext | None = None
    preds: dict[str, PatientPrediction | BaseException] = field(default_factory=dict)
    result: ChunkResult = field(default_factory=ChunkResult)


def make_writer(settings: Settings) -> Writer:
    mode = settings.fhir.writeback
    if mode == "ndjson":
        return NdjsonWriter(settings.fhir.writeback_path)
    if mode == "none":
        return NullWriter()
    from cds.batch.server_writer import ServerWriter

    return ServerWriter.from_settings(settings)


class Scorer:
    """Sources, scoring core and writer for one process; scores chunks of patient ids.

    Args:
        settings: effective settings.
        core: the loaded model (:class:`cds.scoring.ScoringCore`).
        fhir_source: where patient records come from.
        imaging_source: where LGE series come from (None: no images).
        writer: where RiskAssessments go.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        core: ScoringCore,
        fhir_source: Any,
        imaging_source: Any | None,
        writer: Writer,
    ) -> None:
        self.settings = settings
        self.core = core
        self.fhir = fhir_source
        self.imaging = imaging_source
        self.writer = writer
        card_url = f"{settings.server.public_url.rstrip('/')}/model-card"
        self.device_ref = writer.ensure_device(
            build_device(
                core.model_name,
                core.model_version,
                card_url,
                synthetic=core.synthetic_training_data,
                canonical=canonical(settings),
            )
        )
        self.audit = make_auditor(settings)  # AuditEvents: FHIR reads, RiskAssessment writes
        #: SEG + SR of newly segmented series to the PACS (``[pacs] writeback``), or None
        self.results: ResultsWriter | None = None
        #: one user of the imaging source at a time (pulling thread, SEG + SR write-back)
        self._imaging_lock = threading.Lock()
        #: the registry's shadow versions, scored beside the active one and stored apart
        self.shadow = ShadowPass(settings, core)

    @classmethod
    def from_settings(cls, settings: Settings) -> Scorer:
        from cds.registry_serving import active_settings
        from cds.sources import make_fhir_source, make_imaging_source

        settings = active_settings(settings)  # the registry's active version
        scorer = cls(
            settings,
            core=ScoringCore.load(settings),
            fhir_source=make_fhir_source(settings),
            imaging_source=make_imaging_source(settings),
            writer=make_writer(settings),
        )
        scorer.results = make_results_writer(
            settings,
            scorer.imaging,
            model_name=scorer.core.model_name,
            model_version=scorer.core.model_version,
        )
        return scorer

    @property
    def model_version(self) -> str:
        return self.core.model_version

    # -- cohort ------------------------------------------------------------------------
    def cohort_patient_ids(self, cohort: str) -> list[str]:
        return list(self.fhir.cohort_patient_ids(cohort))

    def finish(self) -> None:
        self.writer.finish()

    def close(self) -> None:
        """Close the sources and the writer (connections, associations, threads)."""
        for part in (self.fhir, self.imaging, self.writer, self.results, self.audit, self.core):
            if part is not None:
                part.close()

    # -- one chunk -----------------------------------------------------------------------
    def score_chunk(
        self, sessions: sessionmaker[Session], ctx: RunContext, patient_ids: list[str]
    ) -> ChunkResult:
        """Pull, map, predict, write and store one chunk (the three stages in turn)."""
        chunk = self.prepare_chunk(sessions, ctx, patient_ids)
        self.predict_chunk(sessions, chunk)
        return self.store_chunk(sessions, ctx, chunk)

    def prepare_chunk(
        self, sessions: sessionmaker[Session], ctx: RunContext, patient_ids: list[str]
    ) -> Chunk:
        """Stage 1: pull and map each patient; take out the unchanged ones."""
        from cds.pipeline import assemble, pull_record

        chunk = Chunk(patient_ids=list(patient_ids), ctx=ctx)
        t = chunk.result.timings
        as_of = ctx.as_of.date()
        for pid in patient_ids:
            try:
                t0 = time.perf_counter()
                record = pull_record(pid, self.fhir, as_of=as_of, settings=self.settings)
                self.audit.record(patient_read_event(patient_id=pid, reader=AUDIT_ACTOR))
                t1 = time.perf_counter()
                with self._imaging_lock:
                    chunk.mapped[pid] = assemble(
                        record,
                        self.imaging,
                        as_of=as_of,
                        image_size=self.core.image_size,
                        settings=self.settings,
                    )
                t["pull"] += t1 - t0
                t["map"] += time.perf_counter() - t1
            except Exception as exc:  # noqa: BLE001  (one patient's failure never stops the batch)
                chunk.errors[pid] = _reason(exc)
        if self.settings.batch.incremental and chunk.mapped:
            t0 = time.perf_counter()
            chunk.unchanged = self._skip_unchanged(sessions, ctx, chunk.mapped)
            chunk.result.n_unchanged = len(chunk.unchanged)
            t["unchanged"] += time.perf_counter() - t0
        return chunk

    def predict_chunk(self, sessions: sessionmaker[Session], chunk: Chunk) -> None:
        """Stage 2: image features (cache or image branch) and the model's predictions."""
        t = chunk.result.timings
        t0 = time.perf_counter()
        image_cache = self._image_features(sessions, chunk.mapped, chunk.errors, t)
        t["image"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        chunk.preds = self.core.predict(list(chunk.mapped.values()), image_cache)
        t["predict"] += time.perf_counter() - t0
        if chunk.ctx is not None:
            t0 = time.perf_counter()
            self.shadow.run(sessions, chunk.ctx, chunk.mapped, image_cache)  # never shown
            t["shadow"] += time.perf_counter() - t0

    def store_chunk(
        self, sessions: sessionmaker[Session], ctx: RunContext, chunk: Chunk
    ) -> ChunkResult:
        """Stage 3: write back and store, one patient per transaction (item marked done
        with its Prediction and alerts, after its RiskAssessment was written)."""
        res = chunk.result
        t = res.timings
        for pid in chunk.patient_ids:
            if pid in chunk.unchanged:
                continue
            got = chunk.preds.get(pid)
            if pid in chunk.errors or got is None or isinstance(got, BaseException):
                reason = chunk.errors.get(pid) or (
                    _reason(got) if isinstance(got, BaseException) else "no prediction produced"
                )
                self._mark_failed(sessions, ctx, pid, reason)
                res.n_failed += 1
                continue
            try:
                res.n_alerts += self._write_and_store(sessions, ctx, chunk.mapped[pid], got, t)
                res.n_done += 1
            except Exception as exc:  # noqa: BLE001
                self._mark_failed(sessions, ctx, pid, _reason(exc))
                res.n_failed += 1
        return res

    def _skip_unchanged(
        self,
        sessions: sessionmaker[Session],
        ctx: RunContext,
        mapped: dict[str, MappedPatient],
    ) -> set[str]:
        """Take out of ``mapped`` the patients whose input fingerprint and model version
        are those of their newest nightly prediction: their item is marked ``unchanged``
        and that prediction's ``checked_at`` set, in one transaction; nothing is scored,
        written back or alerted for them."""
        fingerprints = {pid: input_fingerprint(m.model_input) for pid, m in mapped.items()}
        now = dt.datetime.now(dt.UTC)
        with session_scope(sessions) as s:
            same = unchanged_predictions(s, fingerprints, ctx.model_version_id)
            for pid, pred in same.items():
                pred.checked_at = now
                patient = s.get(Patient, pred.patient_id)
                if patient is not None:
                    patient.last_seen = now
                _mark_item(s, ctx, pid, "unchanged", None, now)
        for pid in same:
            mapped.pop(pid)
        return set(same)

    def _image_features(
        self,
        sessions: sessionmaker[Session],
        mapped: dict[str, MappedPatient],
        errors: dict[str, str],
        t: dict[str, float],
    ) -> dict[str, ImageFeatures]:
        """Image features by series fingerprint: cached ones, then the chunk's new series
        encoded together and cached.  A patient whose series fails is dropped with its
        reason in ``errors``."""
        core = self.core
        image_cache: dict[str, ImageFeatures] = {}
        todo: dict[str, MappedPatient] = {}  # fingerprint -> first patient with it
        new_series: list[tuple[MappedPatient, ImageFeatures]] = []
        with session_scope(sessions) as s:
            for pid, m in list(mapped.items()):
                fp = m.model_input.image_fingerprint
                if m.model_input.image is None or not fp or fp in image_cache or fp in todo:
                    continue
                try:
                    cached = core.cached_features(s, fp)
                except Exception as exc:  # noqa: BLE001
                    errors[pid] = _reason(exc)
                    mapped.pop(pid)
                    continue
                if cached is not None:
                    image_cache[fp] = cached
                else:
                    todo[fp] = m
            encoded = core.encode_series(list(todo.values())) if todo else []
            for (fp, m), got in zip(todo.items(), encoded, strict=True):
                try:
                    if isinstance(got, BaseException):
                        raise got
                    core.store_features(s, m, got)
                    image_cache[fp] = got
                    new_series.append((m, got))
                except Exception as exc:  # noqa: BLE001
                    errors[m.patient_id] = _reason(exc)
                    mapped.pop(m.patient_id)
        if self.results is not None:  # SEG + SR to the PACS: cds/imaging_writeback.py
            t0 = time.perf_counter()
            for m, got in new_series:  # after the transaction: no lock held during I/O
                with self._imaging_lock:  # the pulling thread retrieves from the same source
                    self.results.write(m, got)  # never raises; unusable series get nothing
            t["pacs_write"] += time.perf_counter() - t0
        return image_cache

    def _write_and_store(
        self,
        sessions: sessionmaker[Session],
        ctx: RunContext,
        m: MappedPatient,
        pred: PatientPrediction,
        t: dict[str, float],
    ) -> int:
        pid = pred.patient_id
        core = self.core
        scored: Scored = core.scored(m, pred)
        t0 = time.perf_counter()
        occurrence = dt.datetime.now(dt.UTC)
        ra = build_risk_assessment(
            patient_id=pid,
            model_name=core.model_name,
            model_version=core.model_version,
            device_reference=self.device_ref,
            occurrence=occurrence,
            run_date=ctx.run_date,
            probabilities=pred.probabilities,
            tiers=pred.tiers,
            modality_weights=pred.modality_weights,
            fibrosis_burden=pred.fibrosis_burden,
            basis=list(scored.basis),
            contributions=stored_contributions(pred),
            canonical=canonical(self.settings),
        )
        ra_id = self.writer.write(ra)
        if self.settings.fhir.writeback != "none":
            self.audit.record(
                resource_write_event(
                    patient_id=pid,
                    resource_type="RiskAssessment",
                    resource_id=ra_id,
                    identifier=ra_identifier_value(core.model_version, pid, ctx.run_date),
                    writer=AUDIT_ACTOR,
                )
            )
        t1 = time.perf_counter()
        t["write"] += t1 - t0
        with session_scope(sessions) as s:
            patient = s.scalar(select(Patient).where(Patient.fhir_id == pid))
            if patient is None:
                patient = Patient(fhir_id=pid, cohort=self.settings.batch.cohort)
                s.add(patient)
                s.flush()
            patient.last_seen = occurrence
            if scored.mrn:
                patient.identifier = scored.mrn
            previous = s.scalar(
                select(Prediction)
                .where(Prediction.patient_id == patient.id, Prediction.run_id != ctx.run_id)
                .order_by(Prediction.created_at.desc(), Prediction.id.desc())
                .limit(1)
            )
            row = s.scalar(
                select(Prediction).where(
                    Prediction.run_id == ctx.run_id, Prediction.patient_id == patient.id
                )
            )
            if row is None:
                row = Prediction(run_id=ctx.run_id, patient_id=patient.id)
                s.add(row)
            fill_prediction(
                row,
                scored,
                model_version_id=ctx.model_version_id,
                as_of=ctx.as_of,
                source="batch",
                created_at=occurrence,
            )
            row.risk_assessment_id = ra_id
            row.risk_assessment_identifier = ra_identifier_value(
                core.model_version, pid, ctx.run_date
            )
            s.flush()
            findings = evaluate_rules(self.settings.alerts, row, previous)
            n_new = apply_findings(
                s, row, findings, outcome=self.settings.alerts.outcome, run_id=ctx.run_id
            )
            _mark_item(s, ctx, pid, "done", None, occurrence)
        t["store"] += time.perf_counter() - t1
        return n_new

    def _mark_failed(
        self, sessions: sessionmaker[Session], ctx: RunContext, pid: str, reason: str
    ) -> None:
        log.warning("patient %s failed in run %s: %s", pid, ctx.run_id, reason)
        with session_scope(sessions) as s:
            _mark_item(s, ctx, pid, "failed", reason, dt.datetime.now(dt.UTC))


def _mark_item(
    s: Session, ctx: RunContext, pid: str, status: str, error: str | None, at: dt.datetime
) -> None:
    """Record one more attempt of the patient's item in the run, with its outcome."""
    item = s.scalar(
        select(BatchItem).where(BatchItem.run_id == ctx.run_id, BatchItem.patient_fhir_id == pid)
    )
    if item is not None:
        item.status = status
        item.error = error
        item.attempts += 1
        item.updated_at = at


def _reason(exc: BaseException) -> str:
    """A failure reason for the run summary: the error type and its (id-only) message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]
