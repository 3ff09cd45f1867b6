"""Data retention: delete what ``[retention]`` says is kept no longer (``mprtm purge``).

Every limit is in days and 0 (the default) keeps that kind of data for ever.

* ``predictions_days``: predictions older than that (by ``created_at``), except the newest
  prediction of each patient (the inbox and CDS Hooks answer from it), any prediction an
  alert refers to (alerts are clinical records), and any a kept card record refers to.
* ``batch_runs_days``: finished batch runs older than that (by ``started_at``) with their
  per-patient items, unless a kept prediction or an alert refers to the run.
* ``issued_cards_days``: records of the CDS Hooks cards returned (they only tie later
  feedback to a patient); the feedback itself is kept.
* ``image_cache_days``: cached image-branch outputs (recomputed from the PACS on need).
* ``segment_cache_days``: cached text-segment embeddings (:mod:`cds.text_cache`; recomputed
  by the text encoder on need).
* ``dicom_cache_days``: series in ``pacs.cache_dir`` not stored or read for that long
  (:meth:`connectors.pacs.cache.SeriesCache.expire`).

Alerts, their audit events, feedback, users and model versions are never purged here:
how long an audit trail is kept is a legal decision of the site, and they hold no model
inputs.  Database deletions run in one transaction; ``dry_run`` rolls it back, so the
counts are exactly what a real purge would delete.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from cds.config import Settings
from cds.db.models import (
    Alert,
    BatchItem,
    BatchRun,
    ImageFeatureCache,
    IssuedCard,
    Prediction,
    SegmentEmbedding,
)
from cds.errors import ConfigError

log = logging.getLogger("mprtm.retention")

_DAY_KEYS = (
    "predictions_days",
    "batch_runs_days",
    "issued_cards_days",
    "image_cache_days",
    "segment_cache_days",
    "dicom_cache_days",
)


@dataclass
class PurgeReport:
    """What a purge deleted (or, with ``dry_run``, would delete), per kind of data."""

    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        if not self.deleted:
            return ["retention: every limit is 0 (keep for ever); nothing to do"]
        return [f"{verb} {n} {kind}" for kind, n in self.deleted.items()]


def _check(settings: Settings) -> None:
    for key in _DAY_KEYS:
        value = getattr(settings.retention, key)
        if value < 0:
            raise ConfigError(f"retention.{key} must be >= 0 days, got {value}")


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _purge_db(s: Session, settings: Settings, now: dt.datetime, report: PurgeReport) -> None:
    r = settings.retention
    if r.issued_cards_days:
        cutoff = now - dt.timedelta(days=r.issued_cards_days)
        res = s.execute(delete(IssuedCard).where(IssuedCard.issued_at < cutoff))
        report.deleted["card records"] = _count(res)
    if r.predictions_days:
        cutoff = now - dt.timedelta(days=r.predictions_days)
        newest = select(func.max(Prediction.id)).group_by(Prediction.patient_id).scalar_subquery()
        alerted = select(Alert.prediction_id).where(Alert.prediction_id.is_not(None))
        carded = select(IssuedCard.prediction_id).where(IssuedCard.prediction_id.is_not(None))
        res = s.execute(
            delete(Prediction).where(
                Prediction.created_at < cutoff,
                Prediction.id.not_in(newest),
                Prediction.id.not_in(alerted),
                Prediction.id.not_in(carded),
            )
        )
        report.deleted["predictions"] = _count(res)
    if r.batch_runs_days:
        cutoff = now - dt.timedelta(days=r.batch_runs_days)
        used = select(Prediction.run_id).where(Prediction.run_id.is_not(None))
        alerted_runs = select(Alert.run_id).where(Alert.run_id.is_not(None))
        runs = select(BatchRun.id).where(
            BatchRun.started_at < cutoff,
            BatchRun.status != "running",
            BatchRun.id.not_in(used),
            BatchRun.id.not_in(alerted_runs),
        )
        ids = list(s.scalars(runs))
        if ids:
            # explicit, so SQLite without foreign-key enforcement loses nothing either
            s.execute(delete(BatchItem).where(BatchItem.run_id.in_(ids)))
            s.execute(delete(BatchRun).where(BatchRun.id.in_(ids)))
        report.deleted["batch runs"] = len(ids)
    if r.image_cache_days:
        cutoff = now - dt.timedelta(days=r.image_cache_days)
        res = s.execute(delete(ImageFeatureCache).where(ImageFeatureCache.created_at < cutoff))
        report.deleted["cached image outputs"] = _count(res)
    if r.segment_cache_days:
        cutoff = now - dt.timedelta(days=r.segment_cache_days)
        res = s.execute(delete(SegmentEmbedding).where(SegmentEmbedding.created_at < cutoff))
        report.deleted["cached text segments"] = _count(res)


def purge(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Apply ``settings.retention`` once.

    Args:
        settings: effective settings (``[retention]``, ``pacs.cache_dir``).
        sessions: the application database's session factory.
        now: the moment the limits count back from (default: now, UTC).
        dry_run: count only; the database transaction is rolled back and no file is
            removed.

    Raises:
        ConfigError: a negative limit (naming the key).
    """
    _check(settings)
    now = now or dt.datetime.now(dt.UTC)
    report = PurgeReport(dry_run=dry_run)
    with sessions() as s:
        try:
            _purge_db(s, settings, now, report)
            if dry_run:
                s.rollback()
            else:
                s.commit()
        except BaseException:
            s.rollback()
            raise
    days = settings.retention.dicom_cache_days
    cache_dir = Path(settings.pacs.cache_dir)
    if days and cache_dir.is_dir():
        from connectors.pacs.cache import SeriesCache

        gone = SeriesCache(cache_dir).expire(days * 86400.0, now=now.timestamp(), dry_run=dry_run)
        report.deleted["cached DICOM series"] = len(gone)
    elif days:
        report.deleted["cached DICOM series"] = 0
    for line in report.lines():
        log.info("%s", line)
    return report
