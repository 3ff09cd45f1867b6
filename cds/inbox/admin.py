"""Admin pages (role ``admin``): batch runs, the model in use and its card, card feedback.

``/model-card`` is public: CDS Hooks cards link to it as an ``absolute`` link.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from sqlalchemy import case, func, select

from cds.db.models import BatchItem, BatchRun, CardFeedback, IssuedCard, ModelVersion
from cds.inbox._db import db
from cds.inbox.auth import admin_required
from cds.inbox.present import as_utc, metric_tables, render_markdown

bp = Blueprint("admin", __name__, url_prefix="/inbox/admin")
public = Blueprint("public", __name__)

RUNS_PER_PAGE = 50
#: Highest runs page read, and the longest feedback window in days (larger: ignored).
MAX_PAGE = 100_000
MAX_DAYS = 36_500


def duration_s(run: BatchRun) -> float | None:
    start, end = as_utc(run.started_at), as_utc(run.finished_at)
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


@bp.get("/")
@bp.get("/runs")
@admin_required
def runs() -> Any:
    raw_page = request.args.get("page", "1")
    try:
        page = min(MAX_PAGE, max(1, int(raw_page))) if len(raw_page) <= 12 else 1
    except ValueError:
        page = 1
    session = db()
    total = session.scalar(select(func.count(BatchRun.id))) or 0
    rows = list(
        session.scalars(
            select(BatchRun)
            .order_by(BatchRun.started_at.desc(), BatchRun.id.desc())
            .limit(RUNS_PER_PAGE)
            .offset((page - 1) * RUNS_PER_PAGE)
        )
    )
    return render_template(
        "inbox/admin/runs.html",
        runs=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // RUNS_PER_PAGE)),
        duration=duration_s,
        fmt_duration=fmt_duration,
    )


@bp.get("/runs/<int:run_id>")
@admin_required
def run(run_id: int) -> Any:
    session = db()
    batch_run = session.get(BatchRun, run_id)
    if batch_run is None:
        abort(404, description=f"batch run {run_id} not found")
    by_status = dict(
        session.execute(
            select(BatchItem.status, func.count(BatchItem.id))
            .where(BatchItem.run_id == run_id)
            .group_by(BatchItem.status)
        )
        .tuples()
        .all()
    )
    failures = list(
        session.scalars(
            select(BatchItem)
            .where(BatchItem.run_id == run_id, BatchItem.error.is_not(None))
            .order_by(BatchItem.patient_fhir_id)
            .limit(500)
        )
    )
    errors = {item.patient_fhir_id: item.error or "" for item in failures}
    summary_failures = (batch_run.summary or {}).get("failures")
    if isinstance(summary_failures, dict):  # a run whose items were not kept
        for pid, err in summary_failures.items():
            errors.setdefault(str(pid), str(err))
    reasons: dict[str, int] = {}
    for err in errors.values():
        key = err.split(":", 1)[0].strip()[:120] or "unknown"
        reasons[key] = reasons.get(key, 0) + 1
    summary = {k: v for k, v in (batch_run.summary or {}).items() if k not in _SUMMARY_SHOWN}
    model = (
        session.get(ModelVersion, batch_run.model_version_id)
        if batch_run.model_version_id
        else None
    )
    return render_template(
        "inbox/admin/run.html",
        run=batch_run,
        summary=summary,
        errors=sorted(errors.items()),
        by_status=by_status,
        reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
        model=model,
        duration=fmt_duration(duration_s(batch_run)),
        timings=_timings(batch_run.timings),
    )


def _timings(timings: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows of the timings table: ``BatchRun.timings`` is stage -> seconds (summed)."""
    out = []
    for key, value in sorted((timings or {}).items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((key, fmt_duration(float(value))))
        else:
            out.append((key, str(value)))
    return out


#: Summary keys shown elsewhere on the run page.
_SUMMARY_SHOWN = {"failures", "timings_s", "run_id", "run_key", "status"}


def model_in_use() -> ModelVersion | None:
    """The registry's active version, else the model of the latest batch run, else the
    newest registered version."""
    session = db()
    active = session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))
    if active is not None:
        return active
    mv_id = session.scalar(
        select(BatchRun.model_version_id)
        .where(BatchRun.model_version_id.is_not(None))
        .order_by(BatchRun.started_at.desc(), BatchRun.id.desc())
        .limit(1)
    )
    if mv_id is not None:
        return session.get(ModelVersion, mv_id)
    return session.scalar(
        select(ModelVersion)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )


@bp.get("/model")
@admin_required
def model() -> Any:
    current = model_in_use()
    versions = list(
        db().scalars(
            select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        )
    )
    card = render_markdown(current.card_markdown) if current and current.card_markdown else None
    return render_template(
        "inbox/admin/model.html",
        model=current,
        versions=versions,
        card=card,
        metric_tables=metric_tables(current.metrics if current else None),
    )


@public.get("/")
def root() -> Any:
    """The service's root sends a person to the inbox (which asks them to sign in)."""
    return redirect(url_for("inbox.index"))


@public.get("/favicon.ico")
def favicon() -> Any:
    """Browsers ask for /favicon.ico whatever the page says; the icon is an SVG."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


@public.get("/model-card")
def model_card() -> Any:
    current = model_in_use()
    card = render_markdown(current.card_markdown) if current and current.card_markdown else None
    return render_template("inbox/model_card.html", model=current, card=card)


@dataclass
class FeedbackSummary:
    issued: int
    total: int
    accepted: int
    overridden: int
    by_reason: list[tuple[str, str, int]]
    by_service: list[tuple[str, int, int, int]]

    def rate(self, n: int) -> float | None:
        return n / self.total if self.total else None


@bp.get("/feedback")
@admin_required
def feedback() -> Any:
    session = db()
    since_days = request.args.get("days", "")
    conds: list[Any] = []
    if since_days.isdigit() and len(since_days) <= 6 and 0 < int(since_days) <= MAX_DAYS:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=int(since_days))
        conds.append(CardFeedback.received_at >= since)
    accepted = case((CardFeedback.outcome == "accepted", 1), else_=0)
    overridden = case((CardFeedback.outcome == "overridden", 1), else_=0)
    total, n_acc, n_ovr = session.execute(
        select(
            func.count(CardFeedback.id),
            func.coalesce(func.sum(accepted), 0),
            func.coalesce(func.sum(overridden), 0),
        ).where(*conds)
    ).one()
    by_reason = [
        (code or "", display or "", n)
        for code, display, n in session.execute(
            select(
                CardFeedback.override_reason_code,
                func.max(CardFeedback.override_reason_display),
                func.count(CardFeedback.id),
            )
            .where(CardFeedback.outcome == "overridden", *conds)
            .group_by(CardFeedback.override_reason_code)
            .order_by(func.count(CardFeedback.id).desc())
        )
    ]
    by_service = [
        (sid, n, int(a), int(o))
        for sid, n, a, o in session.execute(
            select(
                CardFeedback.service_id,
                func.count(CardFeedback.id),
                func.sum(accepted),
                func.sum(overridden),
            )
            .where(*conds)
            .group_by(CardFeedback.service_id)
            .order_by(CardFeedback.service_id)
        )
    ]
    issued = session.scalar(select(func.count(IssuedCard.id))) or 0
    summary = FeedbackSummary(issued, int(total), int(n_acc), int(n_ovr), by_reason, by_service)
    return render_template("inbox/admin/feedback.html", s=summary, days=since_days)
