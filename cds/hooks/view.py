"""One patient's risk as a card shows it, whether it came from the nightly run or on demand."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from cds.db.models import ModelVersion, Prediction
from cds.explain import stored_contributions
from cds.hooks.scoring import ModelInfo, OnDemandScore
from cds.hooks.store import as_utc
from cds.scoring import StoredInputs
from connectors.fhir.base import PatientRecord


@dataclass
class RiskView:
    """Everything a risk card says.

    Args:
        patient_id: FHIR logical id.
        probabilities: outcome -> 1-year probability.
        tiers: outcome -> low / moderate / high.
        modality_weights: numeric / text / image -> weight (fusion attention).
        contributions: outcome -> reference probability and each modality's contribution
            (``cds/explain.py``); empty when not recorded.
        fibrosis_burden: LGE enhancement / myocardium, or None.
        computed_at: when the score was computed.
        checked_at: when a later nightly run found its inputs unchanged (None: not since).
        data_as_of: the clinical as-of time of its inputs (None: not recorded).
        origin: "nightly" or "on-demand".
        model: the model that scored.
        previous_probabilities: the run before, for the trend (None when there is none).
        previous_at: when that run was.
        stale: True when shown although older than ``fresh_hours`` (time budget or failure).
        stale_reason: why a stale result is shown.
        freshness: input group -> ISO date of its newest input (None: not available).
        prediction_id: the stored Prediction, when there is one.
        warnings: data problems worth telling the clinician (ids only).
        image_quality: the image quality gate's verdict on the LGE series
            (:func:`cds.image_gate.image_status`), None without a series.
    """

    patient_id: str
    probabilities: dict[str, float]
    tiers: dict[str, str]
    modality_weights: dict[str, float]
    fibrosis_burden: float | None
    computed_at: dt.datetime
    origin: str
    model: ModelInfo
    previous_probabilities: dict[str, float] | None = None
    previous_at: dt.datetime | None = None
    stale: bool = False
    stale_reason: str = ""
    freshness: dict[str, str | None] = field(default_factory=dict)
    prediction_id: int | None = None
    warnings: list[str] = field(default_factory=list)
    contributions: dict[str, dict[str, float]] = field(default_factory=dict)
    image_quality: dict[str, Any] | None = None
    data_as_of: dt.datetime | None = None
    checked_at: dt.datetime | None = None


def model_info_of(mv: ModelVersion | None) -> ModelInfo:
    if mv is None:
        return ModelInfo(name="M-PRTM", version="unknown version", synthetic_training_data=True)
    return ModelInfo(
        name=mv.name,
        version=mv.version,
        checkpoint_sha256=mv.checkpoint_sha256,
        synthetic_training_data=bool(mv.synthetic_training_data),
    )


def view_from_prediction(
    pred: Prediction,
    mv: ModelVersion | None,
    previous: Prediction | None,
    *,
    stale: bool = False,
    stale_reason: str = "",
) -> RiskView:
    """A nightly prediction as a card shows it; ``previous`` is the run before it."""
    return RiskView(
        patient_id="",
        probabilities={k: float(v) for k, v in (pred.probabilities or {}).items()},
        tiers={k: str(v) for k, v in (pred.tiers or {}).items()},
        modality_weights={k: float(v) for k, v in (pred.modality_weights or {}).items()},
        contributions=dict(pred.contributions or {}),
        fibrosis_burden=pred.fibrosis_burden,
        computed_at=as_utc(pred.created_at),
        checked_at=as_utc(pred.checked_at) if pred.checked_at is not None else None,
        data_as_of=as_utc(pred.as_of) if pred.as_of else None,
        origin="nightly",
        model=model_info_of(mv),
        previous_probabilities=dict(previous.probabilities) if previous is not None else None,
        previous_at=as_utc(previous.created_at) if previous is not None else None,
        stale=stale,
        stale_reason=stale_reason,
        freshness=StoredInputs.from_json(pred.inputs).freshness(),
        prediction_id=pred.id,
        warnings=[],
        image_quality=pred.image_quality if isinstance(pred.image_quality, dict) else None,
    )


def view_from_score(
    score: OnDemandScore,
    info: ModelInfo,
    computed_at: dt.datetime,
    record: PatientRecord,
    previous: Prediction | None,
    prediction_id: int | None,
    extra_warnings: list[str],
) -> RiskView:
    pred = score.prediction
    return RiskView(
        patient_id=record.patient_id,
        probabilities=dict(pred.probabilities),
        tiers=dict(pred.tiers),
        modality_weights=dict(pred.modality_weights),
        contributions=stored_contributions(pred),
        fibrosis_burden=pred.fibrosis_burden,
        computed_at=computed_at,
        data_as_of=computed_at,
        origin="on-demand",
        model=info,
        previous_probabilities=dict(previous.probabilities) if previous is not None else None,
        previous_at=as_utc(previous.created_at) if previous is not None else None,
        freshness=score.inputs.freshness(),
        prediction_id=prediction_id,
        warnings=[*extra_warnings, *score.warnings],
        image_quality=score.image_quality,
    )
