"""Database reads and writes of the CDS Hooks service (one short session each)."""

from __future__ import annotations

import datetime as dt
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
from cds.hooks.scoring import ModelInfo
from cds.scoring import Scored, fill_prediction, parse_dicom_date


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
    score: Scored,
    info: ModelInfo,
    as_of: dt.datetime,
) -> Prediction:
    """Add an on-demand prediction (``source='on_demand'``) to the session."""
    patient = _patient_row(session, fhir_id)
    if score.mrn and not patient.identifier:
        patient.identifier = score.mrn
    row = Prediction(run_id=None, patient_id=patient.id)
    fill_prediction(
        row,
        score,
        model_version_id=_model_version_id(session, info),
        as_of=as_of,
        source="on_demand",
        created_at=as_of,
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
