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
from dataclasses import dataclass
from typing import Protocol

from cds.scoring import CachedImage, Scored
from connectors.fhir.base import PatientRecord

__all__ = ["CachedImage", "ModelInfo", "OnDemandScore", "OnDemandScorer"]


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


#: A scorer's answer for one patient: the core's :class:`cds.scoring.Scored`.
OnDemandScore = Scored


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
