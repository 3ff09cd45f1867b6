"""Tables of the application database.

Patients are keyed by their FHIR logical id; no names, birth dates or note text are
stored here.  JSON columns hold small structured values (probabilities per outcome,
modality weights, basis references) that are always read and written whole.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cds.db.base import Base


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def TZDateTime() -> DateTime:  # noqa: N802  (reads like a column type)
    """Timezone-aware timestamps (stored as UTC)."""
    return DateTime(timezone=True)


ALERT_STATUSES = ("new", "acknowledged", "snoozed", "resolved")
ALERT_REASONS = ("high_tier", "threshold_crossing", "rise", "fibrosis")
ROLES = ("clinician", "admin")
#: States of a registered model version (``cds.registry``): exactly one is ``active``.
MODEL_STATES = ("candidate", "shadow", "active", "retired")


class ModelVersion(Base):
    """A registered checkpoint: its hash, metrics, model card and lifecycle state.

    At most one row is ``active`` (a partial unique index guards it, so that two
    concurrent promotions cannot both win)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    checkpoint_path: Mapped[str] = mapped_column(String(500))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card_markdown: Mapped[str] = mapped_column(Text, default="")
    synthetic_training_data: Mapped[bool] = mapped_column(Boolean, default=True)
    device_fhir_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    state: Mapped[str] = mapped_column(String(20), default="candidate", server_default="candidate")
    state_changed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)


class ModelVersionEvent(Base):
    """One audited change of a model version: who, when, why (and whether forced)."""

    __tablename__ = "model_version_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)


class ModelValidation(Base):
    """A stored ``mprtm validate`` report (``validation.json``) of one model version."""

    __tablename__ = "model_validations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)


class ShadowPrediction(Base):
    """A shadow version's score of one patient in one nightly run.

    Stored only here: never a RiskAssessment, an alert, a card or an inbox row.
    ``would_alert`` lists the alert rules it would have fired."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (UniqueConstraint("run_id", "model_version_id", "patient_fhir_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    patient_fhir_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    as_of: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    tiers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    fibrosis_burden: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    would_alert: Mapped[list[str]] = mapped_column(JSON, default=list)


class Patient(Base):
    """A followed patient, known by FHIR logical id (and the source's identifier value)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fhir_id: Mapped[str] = mapped_column(String(128), unique=True)
    identifier: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cohort: Mapped[str] = mapped_column(String(200), default="all")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    first_seen: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)

    predictions: Mapped[list[Prediction]] = relationship(back_populates="patient")
    alerts: Mapped[list[Alert]] = relationship(back_populates="patient")


class BatchRun(Base):
    """One run of the follow-up batch; its summary is what operations reads."""

    __tablename__ = "batch_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[str] = mapped_column(String(200), unique=True)
    run_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(40), default="running")
    cohort: Mapped[str] = mapped_column(String(200))
    executor: Mapped[str] = mapped_column(String(20), default="local")
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    started_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_alerts: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=1)

    items: Mapped[list[BatchItem]] = relationship(back_populates="run")


class BatchItem(Base):
    """One patient's state within a run: what makes a killed run resumable."""

    __tablename__ = "batch_items"
    __table_args__ = (UniqueConstraint("run_id", "patient_fhir_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    patient_fhir_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)

    run: Mapped[BatchRun] = relationship(back_populates="items")


class Prediction(Base):
    """One scored patient: per run (batch) or per request (on demand)."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("run_id", "patient_id"),
        # a patient's newest predictions (CDS Hooks, inbox) without scanning every run
        Index("ix_predictions_patient_id_created_at", "patient_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("batch_runs.id"), nullable=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    source: Mapped[str] = mapped_column(String(20), default="batch")
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    as_of: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    tiers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    modality_weights: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    #: outcome -> {"reference": p0, "numeric": d, "text": d, "image": d} (model/attribution.py)
    contributions: Mapped[dict[str, dict[str, float]]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    fibrosis_burden: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    basis: Mapped[list[str]] = mapped_column(JSON, default=list)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    lge_series_uid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: :func:`cds.image_gate.image_status` of the LGE series (None: no series selected)
    image_quality: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    risk_assessment_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    risk_assessment_identifier: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: when a nightly run last found the inputs unchanged (None: only scored, at created_at)
    checked_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)

    patient: Mapped[Patient] = relationship(back_populates="predictions")


class User(Base):
    """A local account of the alert inbox."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default="clinician")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    last_login: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)


class Alert(Base):
    """A reason a clinician should look at a patient.

    ``open_key`` is ``"<patient_id>:<reason>"`` while the alert is not resolved and NULL
    afterwards; its unique constraint allows at most one open alert per patient per reason
    on both SQLite and PostgreSQL.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"), nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("batch_runs.id"), nullable=True)
    reason: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40), default="death")
    message: Mapped[str] = mapped_column(String(300), default="")
    tier: Mapped[str] = mapped_column(String(20), default="high")
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="new", index=True)
    open_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    snoozed_until: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)
    resolved_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    resolved_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="alerts")
    assignee: Mapped[User | None] = relationship()
    events: Mapped[list[AlertEvent]] = relationship(
        back_populates="alert", order_by="AlertEvent.at"
    )


class AlertEvent(Base):
    """The audit trail: who did what to an alert, and when."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(100), default="system")
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)

    alert: Mapped[Alert] = relationship(back_populates="events")


class CardFeedback(Base):
    """CDS Hooks feedback: a card accepted, or overridden with a reason."""

    __tablename__ = "card_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[str] = mapped_column(String(100))
    card_uuid: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    override_reason_code: Mapped[str | None] = mapped_column(String(100), nullable=True)
    override_reason_display: Mapped[str | None] = mapped_column(String(300), nullable=True)
    override_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON, default=list)
    patient_fhir_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome_timestamp: Mapped[dt.datetime | None] = mapped_column(TZDateTime(), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)


class IssuedCard(Base):
    """A card the service returned, so feedback can be tied to its patient and service."""

    __tablename__ = "issued_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_uuid: Mapped[str] = mapped_column(String(64), unique=True)
    service_id: Mapped[str] = mapped_column(String(100))
    patient_fhir_id: Mapped[str] = mapped_column(String(128))
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"), nullable=True)
    issued_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)


class ImageFeatureCache(Base):
    """Image-branch output for one LGE series under one model version.

    Keyed by a fingerprint of the series (UIDs and pixel hashes) and the model version,
    so an unchanged study is never run through the image branch twice and a CDS Hooks
    request never needs the PACS.
    """

    __tablename__ = "image_feature_cache"
    __table_args__ = (UniqueConstraint("series_fingerprint", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_fingerprint: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(100))
    patient_fhir_id: Mapped[str] = mapped_column(String(128), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(128))
    series_instance_uid: Mapped[str] = mapped_column(String(128))
    study_date: Mapped[str | None] = mapped_column(String(8), nullable=True)
    n_slices: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    fibrosis_burden: Mapped[float] = mapped_column(Float)
    overlay_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    #: the image quality gate's verdict (model/image_quality.py); an unusable series is
    #: used as a missing image and keeps no overlay
    quality: Mapped[float] = mapped_column(Float, default=1.0)
    usable: Mapped[bool] = mapped_column(Boolean, default=True)
    quality_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    quality_signals: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)


class SegmentEmbedding(Base):
    """A text segment's embedding by one text encoder (:mod:`cds.text_cache`).

    Keyed by :meth:`model.text_branch.TextEncoder.segment_key` (sha256 of the encoder's
    weights hash, window, runtime and the segment), so the segment's text is not stored;
    the batch, CDS Hooks and training read and fill the same rows.
    """

    __tablename__ = "segment_embeddings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    encoder_id: Mapped[str] = mapped_column(String(64), index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)


class JwtReplay(Base):
    """A CDS Hooks JWT already used: sha256 of (issuer, jti), until the token expires.

    Kept in the database, not in process memory, so that a replay to another
    ``mprtm serve`` process behind the same proxy is refused too.
    """

    __tablename__ = "jwt_replay"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # seconds since the epoch


class LoginFailure(Base):
    """One failed inbox log-in, by sha256 of the normalised user name (shared by every
    server process; the name typed is not stored, it may be a mistyped password)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name_key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)  # seconds since the epoch


class TerminologyExpansion(Base):
    """A value set's expansion as a terminology server returned it
    (``mprtm terminology refresh``); replaces the shipped expansion of the same url and
    version.  Codes only, no patient data."""

    __tablename__ = "terminology_expansions"
    __table_args__ = (UniqueConstraint("url", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    server: Mapped[str] = mapped_column(String(500))
    fetched_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow)
    total: Mapped[int] = mapped_column(Integer)
    #: [[system, code, display], ...]
    codes: Mapped[list[Any]] = mapped_column(JSON)


class MonitorResult(Base):
    """One ``mprtm monitor`` check of one model version after one nightly run: every
    signal with its value, threshold and whether it crossed (``cds.monitor``)."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("batch_runs.id", ondelete="SET NULL"), nullable=True
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    crossed: Mapped[bool] = mapped_column(Boolean, default=False)


class AdminAlert(Base):
    """An alert for administrators (monitoring thresholds crossed); clinicians never see
    these.  ``open_key`` makes a repeated check of the same run raise no second alert."""

    __tablename__ = "admin_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), default="monitoring")
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("batch_runs.id", ondelete="SET NULL"), nullable=True
    )
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="new", index=True)
    open_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
