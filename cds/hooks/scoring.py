"""On-demand scoring during a hook call, behind a small interface.

The service needs one thing from the model side: given a typed :class:`PatientRecord`
and, when the nightly batch already ran the image branch on the patient's LGE series,
its cached :class:`ImageFeatures`, return a :class:`PatientPrediction`.  The interface
(:class:`OnDemandScorer`) keeps the service testable on its own; the production
implementation (:mod:`cds.hooks.model_scorer`) wires the FHIR->features mapping of
:mod:`cds.pipeline` to ``model.predictor.Predictor``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.fhir.base import PatientRecord
from model.types import ImageFeatures, PatientPrediction


@dataclass(frozen=True)
class ModelInfo:
    """What a card says about the model that produced a score.

    Args:
        name: model name ("M-PRTM").
        version: version string shown to users.
        checkpoint_sha256: hash of the checkpoint file ("" when unknown).
        synthetic_training_data: True for a demo model trained on synthetic patients.
        image_cache_key: the ``ImageFeatureCache.model_version`` this model's image branch
            writes, so cached embeddings are only reused by the model that made them.
    """

    name: str
    version: str
    checkpoint_sha256: str = ""
    synthetic_training_data: bool = True
    image_cache_key: str = ""

    @property
    def label(self) -> str:
        sha = f" (checkpoint {self.checkpoint_sha256[:12]})" if self.checkpoint_sha256 else ""
        return f"{self.name} {self.version}{sha}"


@dataclass
class CachedImage:
    """An LGE series the nightly batch already ran through the image branch.

    Args:
        series_instance_uid: the series.
        study_date: the study's date, when recorded.
        features: the cached embedding and fibrosis burden.
    """

    series_instance_uid: str
    study_date: dt.date | None
    features: ImageFeatures


@dataclass
class OnDemandScore:
    """A scorer's answer for one patient.

    Args:
        prediction: the model output.
        input_fingerprint: a stable hash of the inputs used.
        inputs: a small JSON-able summary of the inputs (stored on the Prediction row).
        basis: references of the resources used ("Observation/o1").
        warnings: data problems met on the way (ids only).
        image_quality: :func:`cds.image_gate.image_status` of the cached LGE series used
            (None without one).
    """

    prediction: PatientPrediction
    input_fingerprint: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    basis: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    image_quality: dict[str, Any] | None = None


class OnDemandScorer(Protocol):
    """Scores one patient inside a hook call; must be safe to call from several threads."""

    def info(self) -> ModelInfo:
        """The model that scores (cheap; may load the model on first call)."""
        ...

    def score(
        self, record: PatientRecord, image: CachedImage | None, as_of: dt.datetime
    ) -> OnDemandScore:
        """Score ``record`` as of ``as_of``.  Raises :class:`cds.hooks.errors.ScoringError`
        when the patient cannot be scored (e.g. nothing usable in the record)."""
        ...
