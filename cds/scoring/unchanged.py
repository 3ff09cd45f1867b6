"""The incremental nightly's test: has a patient's input changed since their last score?

A patient is *unchanged* when their newest nightly Prediction was made by the model
version now in use from inputs with the same :func:`cds.scoring.input_fingerprint`.  Such
a patient is not scored again: no new Prediction, no RiskAssessment, no alert; the newest
Prediction's ``checked_at`` records that the inputs were looked at again.  A card or the
inbox shows that time as "checked" beside the "scored" time (``created_at``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cds.db.models import Patient, Prediction


def latest_batch_predictions(session: Session, fhir_ids: list[str]) -> dict[str, Prediction]:
    """Each patient's newest nightly Prediction (any model version), by FHIR id."""
    if not fhir_ids:
        return {}
    rank = (
        func.row_number()
        .over(
            partition_by=Prediction.patient_id,
            order_by=(Prediction.created_at.desc(), Prediction.id.desc()),
        )
        .label("rank")
    )
    inner = (
        select(Prediction.id, Patient.fhir_id, rank)
        .join(Patient, Prediction.patient_id == Patient.id)
        .where(Patient.fhir_id.in_(fhir_ids), Prediction.source == "batch")
        .subquery()
    )
    rows = session.execute(select(inner.c.id, inner.c.fhir_id).where(inner.c.rank == 1)).all()
    by_id = {
        p.id: p
        for p in session.scalars(select(Prediction).where(Prediction.id.in_([r[0] for r in rows])))
    }
    return {str(fhir_id): by_id[pid] for pid, fhir_id in rows if pid in by_id}


def unchanged_predictions(
    session: Session, fingerprints: Mapping[str, str], model_version_id: int
) -> dict[str, Prediction]:
    """The patients of ``fingerprints`` (FHIR id -> input fingerprint) whose newest nightly
    Prediction has that fingerprint and ``model_version_id``, with that Prediction."""
    latest = latest_batch_predictions(session, list(fingerprints))
    return {
        pid: pred
        for pid, pred in latest.items()
        if pred.model_version_id == model_version_id
        and pred.input_fingerprint
        and pred.input_fingerprint == fingerprints[pid][:64]
    }


def checked_time(pred: Prediction) -> dt.datetime:
    """When the prediction's inputs were last looked at: ``checked_at``, else ``created_at``."""
    return pred.checked_at if pred.checked_at is not None else pred.created_at
