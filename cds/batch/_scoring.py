"""Scoring one chunk of patients: the steps of the batch wired in one place.

Steps and their named inputs/outputs:

1. ``pull``: patient id -> :class:`connectors.fhir.base.PatientRecord` (FHIR source);
2. ``map``: record (+ imaging source) -> :class:`cds.pipeline.MappedPatient`
   (features, text, LGE volume, basis, warnings);
3. ``image``: LGE volume -> :class:`model.types.ImageFeatures`, from the cache table when
   the series fingerprint is known under this model version, else the image branch;
4. ``predict``: ModelInputs -> :class:`model.types.PatientPrediction` (batched);
5. ``write``: prediction -> RiskAssessment (by identifier) via the configured writer;
6. ``store``: Prediction row, alert rules, item marked done; one transaction per patient.

The same code runs in process (executor "local") and in Celery workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.batch.alerts import apply_findings, evaluate_rules
from cds.batch.fhir_out import build_device, build_risk_assessment, ra_identifier_value
from cds.batch.writeback import NdjsonWriter, NullWriter, Writer
from cds.clinical_tables import feature_specs
from cds.config import Settings
from cds.db import session_scope
from cds.db.models import BatchItem, ImageFeatureCache, Patient, Prediction
from cds.errors import ConfigError
from cds.explain import stored_contributions
from cds.mapping import MappedPatient
from model.types import ImageFeatures, ModelInput, PatientPrediction

log = logging.getLogger("mprtm.batch")


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
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def _tier(p: float, moderate: float, high: float) -> str:
    return "high" if p >= high else "moderate" if p >= moderate else "low"


def make_writer(settings: Settings) -> Writer:
    mode = settings.fhir.writeback
    if mode == "ndjson":
        return NdjsonWriter(settings.fhir.writeback_path)
    if mode == "none":
        return NullWriter()
    from cds.batch.server_writer import ServerWriter

    return ServerWriter.from_settings(settings)


class Scorer:
    """Sources, predictor and writer for one process; scores chunks of patient ids."""

    def __init__(
        self,
        settings: Settings,
        *,
        predictor: Any,
        fhir_source: Any,
        imaging_source: Any | None,
        writer: Writer,
        checkpoint_path: str,
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.fhir = fhir_source
        self.imaging = imaging_source
        self.writer = writer
        self.checkpoint_path = checkpoint_path
        from cds.batch.runner import file_sha256

        self.checkpoint_sha256 = file_sha256(checkpoint_path)
        self.model_name: str = predictor.model_name
        self.model_version: str = predictor.version
        self.metrics: dict[str, Any] = dict(getattr(predictor.checkpoint, "metrics", {}) or {})
        self.card_markdown: str = getattr(predictor, "card_markdown", "") or ""
        self.synthetic_training_data: bool = bool(
            getattr(predictor, "synthetic_training_data", True)
        )
        card_url = f"{settings.server.public_url.rstrip('/')}/model-card"
        self.device_ref = writer.ensure_device(
            build_device(
                self.model_name,
                self.model_version,
                card_url,
                synthetic=self.synthetic_training_data,
            )
        )
        self._loinc = tuple(c for spec in feature_specs() for c in spec.loinc_codes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Scorer:
        from cds.sources import make_fhir_source, make_imaging_source
        from model.predictor import Predictor

        ckpt = settings.model.checkpoint
        if not Path(ckpt).is_file():
            raise ConfigError(
                f"{settings.source_file or '<defaults>'}: model.checkpoint {ckpt!r} does not "
                "exist (train one with `mprtm train`)"
            )
        predictor = Predictor.from_checkpoint(
            ckpt,
            device=settings.model.device,
            threads=settings.model.cpu_threads,
            text_encoder_path=settings.model.text_encoder or None,
            batch_size=settings.model.batch_size,
        )
        return cls(
            settings,
            predictor=predictor,
            fhir_source=make_fhir_source(settings),
            imaging_source=make_imaging_source(settings),
            writer=make_writer(settings),
            checkpoint_path=ckpt,
        )

    # -- cohort ------------------------------------------------------------------------
    def cohort_patient_ids(self, cohort: str) -> list[str]:
        return list(self.fhir.cohort_patient_ids(cohort))

    def finish(self) -> None:
        self.writer.finish()

    def close(self) -> None:
        """Close the sources and the writer (connections, associations, threads)."""
        for part in (self.fhir, self.imaging, self.writer):
            if part is not None:
                part.close()

    # -- one chunk -----------------------------------------------------------------------
    def score_chunk(
        self, sessions: sessionmaker[Session], ctx: RunContext, patient_ids: list[str]
    ) -> ChunkResult:
        from cds.pipeline import assemble

        res = ChunkResult()
        t = res.timings
        mapped: dict[str, MappedPatient] = {}
        errors: dict[str, str] = {}
        since = (ctx.as_of - dt.timedelta(days=self.settings.fhir.observation_window_days)).date()
        for pid in patient_ids:
            try:
                t0 = time.perf_counter()
                record = self.fhir.patient_record(pid, loinc_codes=self._loinc, since=since)
                t1 = time.perf_counter()
                mapped[pid] = assemble(
                    record,
                    self.imaging,
                    as_of=ctx.as_of.date(),
                    image_size=self.predictor.config.input_size,  # the size training loaded
                    settings=self.settings,
                )
                t["pull"] += t1 - t0
                t["map"] += time.perf_counter() - t1
            except Exception as exc:  # noqa: BLE001  (one patient's failure never stops the batch)
                errors[pid] = _reason(exc)
        # image branch, with the cache
        t0 = time.perf_counter()
        image_cache: dict[str, ImageFeatures] = {}
        with session_scope(sessions) as s:
            todo: dict[str, tuple[str, MappedPatient]] = {}  # fingerprint -> first patient
            for pid, m in list(mapped.items()):
                mi: ModelInput = m.model_input
                fp = mi.image_fingerprint
                if mi.image is None or not fp or fp in image_cache or fp in todo:
                    continue
                try:
                    cached = self._cached_features(s, fp)
                except Exception as exc:  # noqa: BLE001
                    errors[pid] = _reason(exc)
                    mapped.pop(pid)
                    continue
                if cached is not None:
                    image_cache[fp] = cached
                else:
                    todo[fp] = (pid, m)
            for fp, got in self._encode_series(todo).items():
                pid, m = todo[fp]
                if isinstance(got, Exception):
                    errors[pid] = _reason(got)
                    mapped.pop(pid)
                    continue
                try:
                    self._store_features(s, pid, m, got)
                    image_cache[fp] = got
                except Exception as exc:  # noqa: BLE001
                    errors[pid] = _reason(exc)
                    mapped.pop(pid)
        t["image"] += time.perf_counter() - t0
        # predict, batched; isolate a failing patient by falling back to one at a time
        t0 = time.perf_counter()
        preds: dict[str, PatientPrediction] = {}
        inputs = [m.model_input for m in mapped.values()]
        try:
            for p in self.predictor.predict(inputs, image_cache=image_cache):
                preds[p.patient_id] = p
        except Exception:  # noqa: BLE001
            for mi in inputs:
                try:
                    preds[mi.patient_id] = self.predictor.predict([mi], image_cache=image_cache)[0]
                except Exception as exc:  # noqa: BLE001
                    errors[mi.patient_id] = _reason(exc)
        t["predict"] += time.perf_counter() - t0
        # write back and store, one patient per transaction
        for pid in patient_ids:
            if pid in errors or pid not in preds:
                self._mark_failed(sessions, ctx, pid, errors.get(pid, "no prediction produced"))
                res.n_failed += 1
                continue
            try:
                res.n_alerts += self._write_and_store(sessions, ctx, mapped[pid], preds[pid], t)
                res.n_done += 1
            except Exception as exc:  # noqa: BLE001
                self._mark_failed(sessions, ctx, pid, _reason(exc))
                res.n_failed += 1
        return res

    def _cached_features(self, s: Session, fingerprint: str) -> ImageFeatures | None:
        """The stored features of a series under this model version, or None."""
        row = s.scalar(
            select(ImageFeatureCache).where(
                ImageFeatureCache.series_fingerprint == fingerprint,
                ImageFeatureCache.model_version == self.model_version,
            )
        )
        if row is None:
            return None
        return ImageFeatures(
            embedding=np.frombuffer(row.embedding, dtype=np.float32).copy(),
            fibrosis_burden=row.fibrosis_burden,
        )

    def _encode_series(
        self, todo: dict[str, tuple[str, MappedPatient]]
    ) -> dict[str, ImageFeatures | Exception]:
        """Encode the series of ``todo`` (fingerprint -> patient) together
        (:meth:`Predictor.encode_images`: several per pass on a GPU); when that fails,
        one at a time, so that one bad series costs only its own patient."""
        items = list(todo.items())
        vols = [m.model_input.image for _, (_, m) in items]
        names = [f"patient {pid}" for _, (pid, _) in items]
        try:
            feats = self.predictor.encode_images(vols, names=names)
            return {fp: f for (fp, _), f in zip(items, feats, strict=True)}
        except Exception:  # noqa: BLE001
            out: dict[str, ImageFeatures | Exception] = {}
            for fp, (_, m) in items:
                try:
                    out[fp] = self.predictor.encode_image(m.model_input.image)
                except Exception as exc:  # noqa: BLE001
                    out[fp] = exc
            return out

    def _store_features(self, s: Session, pid: str, m: MappedPatient, feats: ImageFeatures) -> None:
        """Keep a newly encoded series' features and overlay under this model version."""
        mi: ModelInput = m.model_input
        assert mi.image is not None
        overlay = None
        if feats.segmentation is not None:
            from cds.overlay import render_overlay
            from model.image_branch import select_slices

            # the segmentation covers the slices the image branch kept, in that order
            kept = select_slices(mi.image.shape[0], feats.segmentation.shape[0])
            k = int(np.argmax((feats.segmentation == 2).sum(axis=(1, 2))))
            overlay = render_overlay(mi.image[kept[k]], feats.segmentation[k])
        series = m.lge_series
        s.add(
            ImageFeatureCache(
                series_fingerprint=mi.image_fingerprint,
                model_version=self.model_version,
                patient_fhir_id=pid,
                study_instance_uid=getattr(series, "study_instance_uid", ""),
                series_instance_uid=getattr(series, "series_instance_uid", ""),
                study_date=getattr(series, "study_date", None) or None,
                n_slices=int(mi.image.shape[0]),
                embedding=np.asarray(feats.embedding, dtype=np.float32).tobytes(),
                fibrosis_burden=float(feats.fibrosis_burden),
                overlay_png=overlay,
            )
        )
        s.flush()

    def _tiers(self, pred: PatientPrediction) -> dict[str, str]:
        r = self.settings.risk
        if r.moderate < 0 or r.high < 0:
            return dict(pred.tiers)
        return {o: _tier(p, r.moderate, r.high) for o, p in pred.probabilities.items()}

    def _write_and_store(
        self,
        sessions: sessionmaker[Session],
        ctx: RunContext,
        m: MappedPatient,
        pred: PatientPrediction,
        t: dict[str, float],
    ) -> int:
        pid = pred.patient_id
        tiers = self._tiers(pred)
        # one rounding for every copy (RiskAssessment, database, cards): 4 decimals
        probs = {k: round(float(v), 4) for k, v in pred.probabilities.items()}
        contributions = stored_contributions(pred)
        t0 = time.perf_counter()
        occurrence = dt.datetime.now(dt.UTC)
        ra = build_risk_assessment(
            patient_id=pid,
            model_name=self.model_name,
            model_version=self.model_version,
            device_reference=self.device_ref,
            occurrence=occurrence,
            run_date=ctx.run_date,
            probabilities=probs,
            tiers=tiers,
            modality_weights=pred.modality_weights,
            fibrosis_burden=pred.fibrosis_burden,
            basis=list(m.basis),
            contributions=contributions,
        )
        ra_id = self.writer.write(ra)
        t1 = time.perf_counter()
        t["write"] += t1 - t0
        with session_scope(sessions) as s:
            patient = s.scalar(select(Patient).where(Patient.fhir_id == pid))
            if patient is None:
                patient = Patient(fhir_id=pid, cohort=self.settings.batch.cohort)
                s.add(patient)
                s.flush()
            patient.last_seen = occurrence
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
            row.model_version_id = ctx.model_version_id
            row.source = "batch"
            row.created_at = occurrence
            row.as_of = ctx.as_of
            row.probabilities = probs
            row.tiers = tiers
            row.modality_weights = {k: float(v) for k, v in pred.modality_weights.items()}
            row.contributions = contributions
            row.fibrosis_burden = pred.fibrosis_burden
            row.input_fingerprint = input_fingerprint(m)
            row.inputs = display_inputs(m)
            row.basis = list(m.basis)
            row.warnings = list(m.warnings)
            row.lge_series_uid = getattr(m.lge_series, "series_instance_uid", None)
            row.risk_assessment_id = ra_id
            row.risk_assessment_identifier = ra_identifier_value(
                self.model_version, pid, ctx.run_date
            )
            s.flush()
            findings = evaluate_rules(self.settings.alerts, row, previous)
            n_new = apply_findings(
                s, row, findings, outcome=self.settings.alerts.outcome, run_id=ctx.run_id
            )
            item = s.scalar(
                select(BatchItem).where(
                    BatchItem.run_id == ctx.run_id, BatchItem.patient_fhir_id == pid
                )
            )
            if item is not None:
                item.status = "done"
                item.error = None
                item.attempts += 1
                item.updated_at = occurrence
        t["store"] += time.perf_counter() - t1
        return n_new

    def _mark_failed(
        self, sessions: sessionmaker[Session], ctx: RunContext, pid: str, reason: str
    ) -> None:
        log.warning("patient %s failed in run %s: %s", pid, ctx.run_id, reason)
        with session_scope(sessions) as s:
            item = s.scalar(
                select(BatchItem).where(
                    BatchItem.run_id == ctx.run_id, BatchItem.patient_fhir_id == pid
                )
            )
            if item is not None:
                item.status = "failed"
                item.error = reason
                item.attempts += 1
                item.updated_at = dt.datetime.now(dt.UTC)


def input_fingerprint(m: MappedPatient) -> str:
    """sha256 over what the model saw: numeric values, the text, the image fingerprint."""
    mi = m.model_input
    h = hashlib.sha256()
    h.update(json.dumps(sorted(mi.numeric.items()), separators=(",", ":")).encode())
    h.update(b"\0" + (mi.text or "").encode())
    h.update(b"\0" + (mi.image_fingerprint or "").encode())
    return h.hexdigest()


def display_inputs(m: MappedPatient) -> dict[str, Any]:
    """Key inputs with values, units, dates and source ids (for the inbox and cards)."""
    s = m.lge_series
    return {
        "features": {k: v.as_dict() for k, v in sorted(m.features.items())},
        "medications": list(m.medications),
        "notes": list(m.notes),
        "lge_series": None
        if s is None
        else {
            "series_instance_uid": s.series_instance_uid,
            "study_date": s.study_date,
            "n_slices": m.n_slices,
        },
    }


def _reason(exc: BaseException) -> str:
    """A failure reason for the run summary: the error type and its (id-only) message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]
