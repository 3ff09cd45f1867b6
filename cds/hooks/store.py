"""Database reads and writes of the CDS Hooks service (one short session each)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cds.db.models import (
    CardFeedback,
    ImageFeatureCache,
    IssuedCard,
    ModelVersion,
    Patient,
    Prediction,
)
from cds.explain import stored_contributions
from cds.hooks.scoring import CachedImage, ModelInfo, OnDemandScore
from cds.image_gate import cached_image_features


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes for timezone-aware columns: they are UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def recent_batch_predictions(
    session: Session, fhir_id: str, limit: int = 2
) -> list[tuple[Prediction, ModelVersion | None]]:
    """The patient's newest nightly predictions, newest first, with their model version."""
    stmt = (
        select(Prediction, ModelVersion)
        .join(Patient, Prediction.patient_id == Patient.id)
        .outerjoin(ModelVersion, Prediction.model_version_id == ModelVersion.id)
        .where(Patient.fhir_id == fhir_id, Prediction.source == "batch")
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(limit)
    )
    return [(p, mv) for p, mv in session.execute(stmt).all()]


def newest_lge_study_date(session: Session, fhir_id: str) -> dt.date | None:
    """Study date of the patient's newest cached LGE series (any model version)."""
    stmt = (
        select(ImageFeatureCache.study_date)
        .where(ImageFeatureCache.patient_fhir_id == fhir_id)
        .order_by(ImageFeatureCache.study_date.desc())
        .limit(1)
    )
    return parse_dicom_date(session.scalars(stmt).first())


def cached_lge_image(session: Session, fhir_id: str, image_cache_key: str) -> CachedImage | None:
    """The newest LGE series the current model (``image_cache_key``) already embedded."""
    stmt = (
        select(ImageFeatureCache)
        .where(
            ImageFeatureCache.patient_fhir_id == fhir_id,
            ImageFeatureCache.model_version == image_cache_key,
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
    )


def parse_dicom_date(value: str | None) -> dt.date | None:
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _patient_row(session: Session, fhir_id: str) -> Patient:
    patient = session.scalars(select(Patient).where(Patient.fhir_id == fhir_id)).first()
    if patient is None:
        patient = Patient(fhir_id=fhir_id, cohort="cds-hooks")
        try:
            with session.begin_nested():
                session.add(patient)
        except IntegrityError:  # another request created it meanwhile
            patient = session.scalars(select(Patient).where(Patient.fhir_id == fhir_id)).one()
    return patient


def _model_version_id(session: Session, info: ModelInfo) -> int | None:
    if not info.checkpoint_sha256:
        return None
    stmt = select(ModelVersion.id).where(ModelVersion.checkpoint_sha256 == info.checkpoint_sha256)
    return session.scalars(stmt).first()


def save_on_demand(
    session: Session,
    fhir_id: str,
    score: OnDemandScore,
    info: ModelInfo,
    as_of: dt.datetime,
    lge_series_uid: str | None,
) -> Prediction:
    """Add an on-demand prediction (``source='on_demand'``) to the session."""
    patient = _patient_row(session, fhir_id)
    pred = score.prediction
    row = Prediction(
        run_id=None,
        patient_id=patient.id,
        model_version_id=_model_version_id(session, info),
        source="on_demand",
        as_of=as_of,
        probabilities=dict(pred.probabilities),
        tiers=dict(pred.tiers),
        modality_weights=dict(pred.modality_weights),
        contributions=stored_contributions(pred),
        fibrosis_burden=pred.fibrosis_burden,
        input_fingerprint=score.input_fingerprint[:64],
        inputs=score.inputs,
        basis=list(score.basis),
        warnings=list(score.warnings)[:200],
        lge_series_uid=lge_series_uid,
        image_quality=score.image_quality,
    )
    session.add(row)
    session.flush()
    return row


def add_issued(
    session: Session,
    cards: Sequence[dict[str, Any]],
    service_id: str,
    fhir_id: str,
    prediction_id: int | None,
) -> None:
    """Remember each card's uuid so feedback can be tied to its patient and service."""
    for card in cards:
        if card.get("uuid"):
            session.add(
                IssuedCard(
                    card_uuid=card["uuid"],
                    service_id=service_id,
                    patient_fhir_id=fhir_id,
                    prediction_id=prediction_id,
                )
            )


def issued_cards(session: Session, uuids: Sequence[str]) -> dict[str, IssuedCard]:
    rows = session.scalars(select(IssuedCard).where(IssuedCard.card_uuid.in_(list(uuids))))
    return {r.card_uuid: r for r in rows}


def store_feedback(factory: sessionmaker[Session], items: Sequence[dict[str, Any]]) -> int:
    """Insert validated feedback items (see :mod:`cds.hooks.feedback`) in one transaction."""
    with factory() as session, session.begin():
        for item in items:
            session.add(CardFeedback(**item))
    return len(items)


def fingerprint(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
