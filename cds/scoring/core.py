"""The scoring core: every caller (nightly batch, CDS Hooks on demand) scores through here.

It owns what must not differ between callers:

- loading the predictor of ``model.checkpoint`` (:meth:`ScoringCore.load`) and hashing
  the checkpoint once per process (:func:`checkpoint_sha256`);
- the input fingerprint (:func:`input_fingerprint`);
- the rounding of probabilities (:func:`round_probabilities`) and the tiers
  (:func:`tiers_for`, with ``[risk]`` thresholds overriding the checkpoint's);
- the image-cache read and write, the quality gate's verdict included
  (:meth:`ScoringCore.cached_features`, :func:`latest_cached_image`,
  :meth:`ScoringCore.store_features`);
- the stored inputs (:class:`cds.scoring.inputs.StoredInputs`) and the Prediction row
  (:func:`fill_prediction`).

Callers adapt only their inputs (a FHIR pull with a PACS, or a hook's prefetch with a
cached image) and their outputs (RiskAssessment and alerts, or cards).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.config import RiskSettings, Settings
from cds.db.models import ImageFeatureCache, Prediction
from cds.errors import ConfigError
from cds.explain import stored_contributions
from cds.image_gate import cached_image_features, features_status, image_status, quality_rules
from cds.mapping import MappedPatient
from cds.scoring.inputs import StoredInputs
from model.types import ImageFeatures, ModelInput, PatientPrediction

#: Decimals of every stored copy of a probability (RiskAssessment, database, cards).
PROBABILITY_DECIMALS = 4


def input_fingerprint(model_input: ModelInput) -> str:
    """sha256 over what the model saw: numeric values, the text, the image fingerprint."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(model_input.numeric.items()), separators=(",", ":")).encode())
    h.update(b"\0" + (model_input.text or "").encode())
    h.update(b"\0" + (model_input.image_fingerprint or "").encode())
    return h.hexdigest()


def round_probabilities(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Probabilities as every stored copy keeps them (:data:`PROBABILITY_DECIMALS`)."""
    return {k: round(float(v), PROBABILITY_DECIMALS) for k, v in probabilities.items()}


def tiers_for(
    probabilities: Mapping[str, float], risk: RiskSettings, model_tiers: Mapping[str, str]
) -> dict[str, str]:
    """Tier per outcome: ``[risk] moderate``/``high`` when both are set (>= 0), else the
    checkpoint's own tiers (``model_tiers``, from its validation quantiles)."""
    from model.calibration import tier

    if risk.moderate < 0 or risk.high < 0:
        return dict(model_tiers)
    return {o: tier(float(p), (risk.moderate, risk.high)) for o, p in probabilities.items()}


@cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    from model.checkpoint import file_sha256

    return file_sha256(path)


def checkpoint_sha256(path: str | Path) -> str:
    """The checkpoint file's sha256, computed once per process (per path, size and mtime)."""
    st = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@dataclass
class CachedImage:
    """An LGE series the image branch already ran on (a row of the image cache).

    Args:
        series_instance_uid: the series.
        study_date: the study's date, when recorded.
        features: the cached embedding, fibrosis burden and quality verdict.
        n_slices: slices of the series as the image branch saw it.
        series_fingerprint: the pixel fingerprint the series was cached under (the same
            value the batch puts into :func:`input_fingerprint`).
    """

    series_instance_uid: str
    study_date: dt.date | None
    features: ImageFeatures
    n_slices: int = 0
    series_fingerprint: str = ""


@dataclass
class Scored:
    """One patient's score as every caller stores and shows it.

    Args:
        prediction: the model output with rounded probabilities and final tiers.
        input_fingerprint: :func:`input_fingerprint` of the model input.
        inputs: what the model saw (stored on ``Prediction.inputs``).
        basis: references of the resources used (``Observation/o1``).
        warnings: data problems met on the way (ids only).
        image_quality: :func:`cds.image_gate.image_status` of the LGE series (None
            without one).
        lge_series_uid: the LGE series used, if any.
        mrn: the patient's medical record number, when the record has one.
    """

    prediction: PatientPrediction
    input_fingerprint: str = ""
    inputs: StoredInputs = field(default_factory=StoredInputs)
    basis: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    image_quality: dict[str, Any] | None = None
    lge_series_uid: str | None = None
    mrn: str | None = None


def parse_dicom_date(value: str | None) -> dt.date | None:
    """``20260301`` -> date; None for anything else."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def latest_cached_image(session: Session, fhir_id: str, model_version: str) -> CachedImage | None:
    """The patient's newest LGE series that ``model_version`` already embedded, or None."""
    stmt = (
        select(ImageFeatureCache)
        .where(
            ImageFeatureCache.patient_fhir_id == fhir_id,
            ImageFeatureCache.model_version == model_version,
        )
        .order_by(ImageFeatureCache.study_date.desc(), ImageFeatureCache.created_at.desc())
        .limit(1)
    )
    row = session.scalars(stmt).first()
    if row is None:
        return None
    return CachedImage(
        series_instance_uid=row.series_instance_uid,
        study_date=parse_dicom_date(row.study_date),
        features=cached_image_features(row),
        n_slices=int(row.n_slices or 0),
        series_fingerprint=row.series_fingerprint,
    )


def fill_prediction(
    row: Prediction,
    scored: Scored,
    *,
    model_version_id: int | None,
    as_of: dt.datetime,
    source: str,
    created_at: dt.datetime,
) -> None:
    """Write ``scored`` onto a Prediction row (new or the run's earlier one)."""
    pred = scored.prediction
    row.model_version_id = model_version_id
    row.source = source
    row.created_at = created_at
    row.as_of = as_of
    row.probabilities = dict(pred.probabilities)
    row.tiers = dict(pred.tiers)
    row.modality_weights = {k: float(v) for k, v in pred.modality_weights.items()}
    row.contributions = stored_contributions(pred)
    row.fibrosis_burden = pred.fibrosis_burden
    row.input_fingerprint = scored.input_fingerprint[:64]
    row.inputs = scored.inputs.to_json()
    row.basis = list(scored.basis)
    row.warnings = list(scored.warnings)[:200]
    row.lge_series_uid = scored.lge_series_uid
    row.image_quality = scored.image_quality


class ScoringCore:
    """The loaded model of one process and what turns its output into stored rows.

    Args:
        settings: ``risk.*`` (tier thresholds) and, for :meth:`load`, ``model.*``.
        predictor: a loaded ``model.predictor.Predictor``.
        checkpoint_path: the checkpoint it was loaded from.
    """

    def __init__(self, settings: Settings, predictor: Any, checkpoint_path: str | Path) -> None:
        self.settings = settings
        self.predictor = predictor
        self.checkpoint_path = str(checkpoint_path)
        self.checkpoint_sha256 = checkpoint_sha256(checkpoint_path)
        self.model_name: str = str(predictor.model_name)
        self.model_version: str = str(predictor.version)
        self.metrics: dict[str, Any] = dict(getattr(predictor.checkpoint, "metrics", {}) or {})
        self.card_markdown: str = getattr(predictor, "card_markdown", "") or ""
        self.synthetic_training_data = bool(getattr(predictor, "synthetic_training_data", True))

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        predictor_class: Any = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> ScoringCore:
        """Load ``model.checkpoint``.

        Args:
            settings: ``model.*`` (checkpoint, device, threads, text encoder, batch size,
                image gate thresholds, segment cache) and ``database.url`` (the segment
                cache, :mod:`cds.text_cache`).
            predictor_class: a subclass of ``Predictor`` (CDS Hooks adds a text cache).
            threads: torch CPU threads (default ``model.cpu_threads``).
            batch_size: patients per forward pass (default ``model.batch_size``).

        Raises:
            ConfigError: the checkpoint file does not exist, or a gate threshold is invalid.
            model.errors.ModelError, OSError, ValueError: the checkpoint cannot be used.
        """
        from model.predictor import Predictor

        m = settings.model
        if not Path(m.checkpoint).is_file():
            raise ConfigError(
                f"{settings.source_file or '<defaults>'}: model.checkpoint "
                f"{m.checkpoint!r} not found (train one with `mprtm train`)"
            )
        predictor = (predictor_class or Predictor).from_checkpoint(
            m.checkpoint,
            device=m.device,
            threads=m.cpu_threads if threads is None else threads,
            text_encoder_path=m.text_encoder or None,
            batch_size=m.batch_size if batch_size is None else batch_size,
            quality_rules=quality_rules(settings),
        )
        if m.segment_cache:
            from cds.text_cache import DbSegmentStore

            predictor.segment_store = DbSegmentStore.open(settings.database.url)
        return cls(settings, predictor, m.checkpoint)

    def close(self) -> None:
        """Close what :meth:`load` opened beside the model (the segment cache's connections)."""
        store = getattr(self.predictor, "segment_store", None)
        if store is not None and hasattr(store, "close"):
            store.close()

    @property
    def image_size(self) -> int:
        """In-plane side of the image input (the size the model was trained at)."""
        return int(self.predictor.config.input_size)

    # -- image cache -------------------------------------------------------------------
    def cached_features(self, session: Session, fingerprint: str) -> ImageFeatures | None:
        """The stored features of a series under this model version, or None."""
        row = session.scalar(
            select(ImageFeatureCache).where(
                ImageFeatureCache.series_fingerprint == fingerprint,
                ImageFeatureCache.model_version == self.model_version,
            )
        )
        return None if row is None else cached_image_features(row)

    def cached_image(self, session: Session, fhir_id: str) -> CachedImage | None:
        """The patient's newest series this model already embedded (:func:`latest_cached_image`)."""
        return latest_cached_image(session, fhir_id, self.model_version)

    def encode_series(
        self, patients: Sequence[MappedPatient]
    ) -> list[ImageFeatures | BaseException]:
        """Run the image branch on each patient's volume, several per pass; when that fails,
        one at a time, so that one bad series costs only its own patient."""
        inputs = [m.model_input for m in patients]
        try:
            return list(
                self.predictor.encode_images(
                    [mi.image for mi in inputs],
                    names=[f"patient {m.patient_id}" for m in patients],
                    spacings=[mi.image_spacing_mm for mi in inputs],
                )
            )
        except Exception:  # noqa: BLE001
            out: list[ImageFeatures | BaseException] = []
            for mi in inputs:
                try:
                    out.append(self.predictor.encode_image(mi.image, mi.image_spacing_mm))
                except Exception as exc:  # noqa: BLE001
                    out.append(exc)
            return out

    def store_features(self, session: Session, mapped: MappedPatient, feats: ImageFeatures) -> None:
        """Keep a newly encoded series' features, verdict and overlay under this model
        version (no overlay for an unusable series: its segmentation is not shown)."""
        from cds.overlay import series_overlay

        mi = mapped.model_input
        assert mi.image is not None
        series = mapped.lge_series
        session.add(
            ImageFeatureCache(
                series_fingerprint=mi.image_fingerprint,
                model_version=self.model_version,
                patient_fhir_id=mapped.patient_id,
                study_instance_uid=getattr(series, "study_instance_uid", ""),
                series_instance_uid=getattr(series, "series_instance_uid", ""),
                study_date=getattr(series, "study_date", None) or None,
                n_slices=int(mi.image.shape[0]),
                embedding=np.asarray(feats.embedding, dtype=np.float32).tobytes(),
                fibrosis_burden=float(feats.fibrosis_burden),
                overlay_png=series_overlay(mi.image, feats),
                quality=float(feats.quality),
                usable=bool(feats.usable),
                quality_reason=feats.quality_reason,
                quality_signals={k: float(v) for k, v in feats.quality_signals.items()},
            )
        )
        session.flush()

    # -- predict and store -------------------------------------------------------------
    def use_cached_image(self, mapped: MappedPatient, image: CachedImage) -> dict[str, Any]:
        """Point the patient's input at a cached series (no pixels: an empty volume plus the
        series' pixel fingerprint, which the predictor finds in the returned image cache and
        which makes :func:`input_fingerprint` equal to the batch's for the same data)."""
        key = image.series_fingerprint or f"cache:{image.series_instance_uid}"
        mapped.model_input.image = np.zeros((0, 0, 0), dtype=np.float32)
        mapped.model_input.image_fingerprint = key
        return {key: image.features}

    def predict(
        self, patients: Sequence[MappedPatient], image_cache: dict[str, Any] | None
    ) -> dict[str, PatientPrediction | BaseException]:
        """Predictions by patient id, batched; a failing batch is retried one patient at a
        time so that a failure costs only its own patient."""
        inputs = [m.model_input for m in patients]
        try:
            return {p.patient_id: p for p in self.predictor.predict(inputs, image_cache)}
        except Exception:  # noqa: BLE001
            out: dict[str, PatientPrediction | BaseException] = {}
            for mi in inputs:
                try:
                    out[mi.patient_id] = self.predictor.predict([mi], image_cache)[0]
                except Exception as exc:  # noqa: BLE001
                    out[mi.patient_id] = exc
            return out

    def scored(
        self, mapped: MappedPatient, pred: PatientPrediction, image: CachedImage | None = None
    ) -> Scored:
        """The stored form of one prediction.

        Args:
            mapped: the patient's inputs.
            pred: the model's output for them.
            image: the cached series used instead of pixels (on demand), if any.
        """
        fingerprint = input_fingerprint(mapped.model_input)
        pred.probabilities = round_probabilities(pred.probabilities)
        pred.tiers = tiers_for(pred.probabilities, self.settings.risk, pred.tiers)
        quality: dict[str, Any] | None
        if image is not None:
            quality = features_status(image.features, image.series_instance_uid)
            inputs = StoredInputs.from_mapped(
                mapped,
                lge_series_uid=image.series_instance_uid,
                lge_study_date=image.study_date,
                lge_slices=image.n_slices,
            )
            series_uid: str | None = image.series_instance_uid
        else:
            quality = image_status(mapped, pred.image_features)
            inputs = StoredInputs.from_mapped(mapped)
            series_uid = getattr(mapped.lge_series, "series_instance_uid", None)
        pred.image_features = None
        return Scored(
            prediction=pred,
            input_fingerprint=fingerprint,
            inputs=inputs,
            basis=list(mapped.basis),
            warnings=list(mapped.warnings),
            image_quality=quality,
            lge_series_uid=series_uid,
            mrn=mapped.mrn,
        )
