"""The inbox list, the patient page and the alert actions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from cds import labels
from cds._guards import path_id
from cds.audit import audit, inbox_action_event, page_view_event
from cds.db.models import (
    ALERT_REASONS,
    Alert,
    AlertEvent,
    ImageFeatureCache,
    Patient,
    Prediction,
    User,
    utcnow,
)
from cds.explain import HEADLINE_OUTCOME, contribution_parts
from cds.image_gate import is_unusable, unusable_text
from cds.inbox import actions, charts, present
from cds.inbox._db import db, safe_next, settings
from cds.inbox.auth import Principal, account_required, current, login_required
from cds.inbox.errors import ActionError
from cds.inbox.queries import (
    PER_PAGE_CHOICES,
    SORT_CHOICES,
    STATUS_CHOICES,
    TIER_CHOICES,
    cohorts,
    list_alerts,
    parse_query,
)

bp = Blueprint("inbox", __name__, url_prefix="/inbox")

#: Alerts one bulk acknowledge may touch (a page holds at most 100).
MAX_BULK = 200


@bp.get("/")
@account_required
def index() -> Any:
    session = db()
    if actions.wake_expired_snoozes(session):
        session.commit()
    query = parse_query(request.args)
    page = list_alerts(session, query, current().user_id, settings().alerts.outcome)
    return render_template(
        "inbox/inbox.html",
        q=query,
        page=page,
        people=present.people(session, [r.lead for r in page.rows]),
        cohorts=cohorts(session),
        status_choices=STATUS_CHOICES,
        tier_choices=TIER_CHOICES,
        reason_choices=ALERT_REASONS,
        sort_choices=SORT_CHOICES,
        per_page_choices=PER_PAGE_CHOICES,
    )


@bp.post("/alerts/acknowledge")
@account_required
def bulk_acknowledge() -> Any:
    raw_ids = request.form.getlist("alert_id")
    if len(raw_ids) > MAX_BULK:
        abort(400, description=f"alert_id: at most {MAX_BULK} alerts at once")
    ids = []
    for raw in raw_ids:
        value = path_id(raw)
        if value is None:
            abort(400, description="alert_id: not an alert id")
        ids.append(value)
    back = safe_next(request.form.get("next"), url_for("inbox.index"))
    if not ids:
        flash("Select at least one alert to acknowledge.", "error")
        return redirect(back)
    done, skipped = actions.bulk_acknowledge(db(), ids, current())
    db().commit()
    msg = f"Acknowledged {done} alert{'s' if done != 1 else ''}."
    if skipped:
        msg += f" {skipped} skipped (already acknowledged, resolved or not found)."
    flash(msg, "success")
    return redirect(back)


def _patient_or_404(fhir_id: str, principal: Principal) -> Patient:
    if not principal.may_see(fhir_id):
        abort(403, description="This session was opened from the EHR for another patient.")
    patient = db().scalar(select(Patient).where(Patient.fhir_id == fhir_id))
    if patient is None:
        abort(404, description="No such patient in the inbox.")
    return patient


def _predictions(patient: Patient) -> list[Prediction]:
    return list(
        db().scalars(
            select(Prediction)
            .where(Prediction.patient_id == patient.id)
            .order_by(Prediction.as_of, Prediction.id)
        )
    )


def _overlay(patient: Patient, latest: Prediction | None) -> ImageFeatureCache | None:
    if latest is not None and is_unusable(latest.image_quality):
        return None  # the series failed the image quality gate: its reading is not shown
    stmt = select(ImageFeatureCache).where(
        ImageFeatureCache.patient_fhir_id == patient.fhir_id,
        ImageFeatureCache.overlay_png.is_not(None),
    )
    if latest is not None and latest.lge_series_uid:
        hit = db().scalar(
            stmt.where(ImageFeatureCache.series_instance_uid == latest.lge_series_uid)
            .order_by(ImageFeatureCache.created_at.desc())
            .limit(1)
        )
        if hit is not None:
            return hit
    return db().scalar(stmt.order_by(ImageFeatureCache.created_at.desc()).limit(1))


def _thresholds() -> tuple[float, float] | None:
    risk = settings().risk
    if 0 <= risk.moderate < risk.high <= 1:
        return (risk.moderate, risk.high)
    return None


@bp.get("/patients/<fhir_id>")
def patient(fhir_id: str) -> Any:
    if request.args.get("launch") and request.args.get("iss"):  # an EHR launch of this link
        return redirect(
            url_for("smart.launch", launch=request.args["launch"], iss=request.args["iss"])
        )
    return _patient_page(fhir_id)


@login_required
def _patient_page(fhir_id: str) -> Any:
    principal = current()
    pat = _patient_or_404(fhir_id, principal)
    audit(page_view_event(patient_id=fhir_id, user=principal.name))
    if principal.patient_scope is None and actions.wake_expired_snoozes(db()):
        db().commit()
    preds = _predictions(pat)
    latest = preds[-1] if preds else None
    outcomes = present.ordered_outcomes(latest.probabilities if latest else {})
    alerts = list(
        db().scalars(
            select(Alert).where(Alert.patient_id == pat.id).order_by(Alert.created_at.desc())
        )
    )
    events = list(
        db().scalars(
            select(AlertEvent)
            .join(Alert)
            .where(Alert.patient_id == pat.id)
            .order_by(AlertEvent.at.desc(), AlertEvent.id.desc())
        )
    )
    users = list(db().scalars(select(User).where(User.active.is_(True)).order_by(User.username)))
    overlay = _overlay(pat, latest)
    trend = [(p, {o: p.probabilities.get(o) for o in outcomes}) for p in preds]
    return render_template(
        "inbox/patient.html",
        patient=pat,
        latest=latest,
        outcomes=outcomes,
        trend=trend,
        modalities=present.ordered_modalities(latest.modality_weights if latest else {}),
        contribution_rows=present.contribution_rows(latest.contributions if latest else None),
        headline_outcome=HEADLINE_OUTCOME,
        alerts=alerts,
        events=events,
        users=users,
        overlay=overlay,
        image_unusable=unusable_text(latest.image_quality) if latest else None,
        input_groups=present.input_groups(latest.inputs if latest else None),
        resolve_reasons=actions.RESOLVE_REASONS,
        tomorrow=(utcnow().date() + dt.timedelta(days=1)).isoformat(),
        max_snooze=(utcnow().date() + dt.timedelta(days=actions.MAX_SNOOZE_DAYS)).isoformat(),
        thresholds=_thresholds(),
    )


def _svg(data: bytes) -> Response:
    resp = Response(data, mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "private, max-age=300"
    # matplotlib's SVG styles with inline attributes; it carries no script.
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )
    return resp


@bp.get("/patients/<fhir_id>/risk-trend.svg")
@login_required
def risk_trend(fhir_id: str) -> Any:
    preds = _predictions(_patient_or_404(fhir_id, current()))
    if not preds:
        abort(404, description="No predictions for this patient.")
    outcomes = present.ordered_outcomes({k for p in preds for k in p.probabilities})
    dates = [present.as_utc(p.as_of) or p.as_of for p in preds]
    series = {o: [p.probabilities.get(o) for p in preds] for o in outcomes}
    return _svg(charts.risk_trend_svg(dates, series, labels.OUTCOME_LABELS, _thresholds()))


@bp.get("/patients/<fhir_id>/contributions/<outcome>.svg")
@login_required
def contributions(fhir_id: str, outcome: str) -> Any:
    preds = _predictions(_patient_or_404(fhir_id, current()))
    parts = contribution_parts(preds[-1].contributions, outcome) if preds else None
    if parts is None:
        abort(404, description="No contributions recorded for this patient and outcome.")
    label = labels.OUTCOME_LABELS.get(outcome, outcome)
    return _svg(charts.contributions_svg(parts, labels.MODALITY_LABELS, label))


@bp.get("/patients/<fhir_id>/modality-weights.svg")
@login_required
def modality_weights(fhir_id: str) -> Any:
    preds = _predictions(_patient_or_404(fhir_id, current()))
    if not preds or not preds[-1].modality_weights:
        abort(404, description="No modality weights for this patient.")
    weights = preds[-1].modality_weights
    ordered = {m: float(weights[m]) for m in present.ordered_modalities(weights)}
    return _svg(charts.modality_weights_svg(ordered, labels.MODALITY_LABELS))


@bp.get("/patients/<fhir_id>/overlay/<int:cache_id>.png")
@login_required
def overlay(fhir_id: str, cache_id: int) -> Any:
    pat = _patient_or_404(fhir_id, current())
    row = db().get(ImageFeatureCache, cache_id)
    if row is None or row.patient_fhir_id != pat.fhir_id or not row.overlay_png:
        abort(404, description="No overlay image.")
    resp = Response(row.overlay_png, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


def _act(alert_id: int, apply: Any, success: str) -> Any:
    """Run one action; on a refused action show the patient page again with the reason."""
    principal = current()
    session = db()
    try:
        alert = actions.get_alert(session, alert_id, principal)
    except ActionError as exc:
        abort(404, description=str(exc))
    fhir_id = alert.patient.fhir_id
    try:
        message = apply(session, alert, principal) or success
        session.commit()
        audit(
            inbox_action_event(
                patient_id=fhir_id,
                user=principal.name,
                alert_id=alert_id,
                action=str(request.endpoint).rsplit(".", 1)[-1],
            )
        )
    except ActionError as exc:
        session.rollback()
        flash(str(exc), "error")
        return _patient_page(fhir_id), exc.status
    flash(message, "success")
    back = url_for("inbox.patient", fhir_id=fhir_id, _anchor=f"alert-{alert_id}")
    return redirect(safe_next(request.form.get("next"), back), code=303)


@bp.post("/alerts/<int:alert_id>/acknowledge")
@login_required
def acknowledge(alert_id: int) -> Any:
    def apply(s: Any, a: Alert, p: Principal) -> str | None:
        return None if actions.acknowledge(s, a, p) else f"Alert {a.id} was already acknowledged."

    return _act(alert_id, apply, f"Alert {alert_id} acknowledged.")


@bp.post("/alerts/<int:alert_id>/assign")
@login_required
def assign(alert_id: int) -> Any:
    raw = request.form.get("assignee", "")
    if raw in ("", "none"):
        assignee: int | None = None
    elif raw == "me":
        assignee = current().user_id
        if assignee is None:
            abort(400, description="assignee: an EHR-launched session has no inbox account")
    else:
        assignee = path_id(raw)
        if assignee is None:
            abort(400, description="assignee: not a user id")

    def apply(s: Any, a: Alert, p: Principal) -> None:
        actions.assign(s, a, p, assignee)

    return _act(alert_id, apply, f"Alert {alert_id} assignment saved.")


@bp.post("/alerts/<int:alert_id>/snooze")
@login_required
def snooze(alert_id: int) -> Any:
    try:
        until = dt.date.fromisoformat(request.form.get("until", ""))
    except ValueError:
        abort(400, description="until: not a date (YYYY-MM-DD)")

    def apply(s: Any, a: Alert, p: Principal) -> None:
        actions.snooze(s, a, p, until)

    return _act(alert_id, apply, f"Alert {alert_id} snoozed until {until.isoformat()}.")


@bp.post("/alerts/<int:alert_id>/resolve")
@login_required
def resolve(alert_id: int) -> Any:
    reason = request.form.get("reason", "")
    comment = request.form.get("comment", "")

    def apply(s: Any, a: Alert, p: Principal) -> None:
        actions.resolve(s, a, p, reason, comment)

    return _act(alert_id, apply, f"Alert {alert_id} resolved.")
