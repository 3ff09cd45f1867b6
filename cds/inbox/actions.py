"""What a clinician can do to an alert, each step written to the audit trail.

Every function changes one alert with a conditional ``UPDATE ... WHERE status IN (...)``
(so two people acting at once cannot both move the same alert) and adds one
:class:`~cds.db.models.AlertEvent` naming who, when and what.  The caller commits.
Resolving an alert clears ``open_key``, so the batch may raise a new alert for the same
patient and reason later.

Errors are :class:`~cds.inbox.errors.ActionError` with the HTTP status a view returns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cds.db.models import Alert, AlertEvent, User, utcnow
from cds.inbox.auth import Principal
from cds.inbox.errors import ActionError

#: Reasons a clinician may give for resolving an alert (code -> label).
RESOLVE_REASONS: dict[str, str] = {
    "reviewed_no_change": "Reviewed: no change to care needed",
    "treatment_adjusted": "Treatment adjusted",
    "follow_up_scheduled": "Follow-up visit or test scheduled",
    "patient_contacted": "Patient contacted",
    "already_managed": "Already being managed elsewhere",
    "not_clinically_relevant": "Not clinically relevant",
    "other": "Other (explain in the comment)",
}
MAX_COMMENT = 2000
MAX_SNOOZE_DAYS = 365
OPEN_STATUSES = ("new", "acknowledged", "snoozed")


def get_alert(session: Session, alert_id: int, principal: Principal) -> Alert:
    """The alert, or ActionError 404 when it does not exist or is not visible to ``principal``."""
    alert = session.get(Alert, alert_id)
    if alert is None or not principal.may_see(alert.patient.fhir_id):
        raise ActionError(f"alert {alert_id} not found", status=404)
    return alert


def _event(
    session: Session,
    alert: Alert,
    principal: Principal,
    action: str,
    detail: dict[str, Any],
    now: dt.datetime,
) -> AlertEvent:
    event = AlertEvent(
        alert_id=alert.id,
        user_id=principal.user_id,
        actor=principal.name,
        action=action,
        detail=detail,
        at=now,
    )
    session.add(event)
    return event


def _transition(
    session: Session, alert: Alert, from_states: tuple[str, ...], values: dict[str, Any]
) -> None:
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.status.in_(from_states))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(alert)
        raise ActionError(
            f"alert {alert.id} is {alert.status}; this action needs one of "
            f"{', '.join(from_states)}",
            status=409,
        )
    session.refresh(alert)


def acknowledge(
    session: Session, alert: Alert, principal: Principal, now: dt.datetime | None = None
) -> bool:
    """Mark a new or snoozed alert as seen.  False (and no event) when already acknowledged."""
    now = now or utcnow()
    if alert.status == "acknowledged":
        return False
    previous = alert.status
    _transition(
        session,
        alert,
        ("new", "snoozed"),
        {"status": "acknowledged", "snoozed_until": None, "updated_at": now},
    )
    _event(session, alert, principal, "acknowledge", {"from": previous}, now)
    return True


def assign(
    session: Session,
    alert: Alert,
    principal: Principal,
    assignee_id: int | None,
    now: dt.datetime | None = None,
) -> None:
    """Assign an open alert to an active user (``None`` removes the assignment)."""
    now = now or utcnow()
    assignee: User | None = None
    if assignee_id is not None:
        assignee = session.get(User, assignee_id)
        if assignee is None or not assignee.active:
            raise ActionError(f"assignee: no active user with id {assignee_id}")
    previous = alert.assignee.username if alert.assignee is not None else None
    _transition(
        session,
        alert,
        OPEN_STATUSES,
        {"assignee_id": assignee.id if assignee else None, "updated_at": now},
    )
    detail = {"to": assignee.username if assignee else None, "from": previous}
    _event(session, alert, principal, "assign", detail, now)


def snooze(
    session: Session,
    alert: Alert,
    principal: Principal,
    until: dt.date,
    now: dt.datetime | None = None,
) -> None:
    """Hide an open alert until the start (00:00 UTC) of ``until``, a day after today."""
    now = now or utcnow()
    today = now.astimezone(dt.UTC).date()
    if until <= today:
        raise ActionError("snooze_until: the date must be after today")
    if (until - today).days > MAX_SNOOZE_DAYS:
        raise ActionError(f"snooze_until: at most {MAX_SNOOZE_DAYS} days ahead")
    wake = dt.datetime.combine(until, dt.time(0, 0), tzinfo=dt.UTC)
    previous = alert.status
    _transition(
        session,
        alert,
        OPEN_STATUSES,
        {"status": "snoozed", "snoozed_until": wake, "updated_at": now},
    )
    _event(session, alert, principal, "snooze", {"until": until.isoformat(), "from": previous}, now)


def resolve(
    session: Session,
    alert: Alert,
    principal: Principal,
    reason: str,
    comment: str,
    now: dt.datetime | None = None,
) -> None:
    """Close an alert with one of :data:`RESOLVE_REASONS` and an optional comment."""
    now = now or utcnow()
    comment = comment.strip()
    if reason not in RESOLVE_REASONS:
        raise ActionError(f"reason: must be one of {', '.join(RESOLVE_REASONS)}")
    if len(comment) > MAX_COMMENT:
        raise ActionError(f"comment: at most {MAX_COMMENT} characters")
    if reason == "other" and not comment:
        raise ActionError("comment: required when the reason is 'other'")
    previous = alert.status
    _transition(
        session,
        alert,
        OPEN_STATUSES,
        {
            "status": "resolved",
            "open_key": None,
            "snoozed_until": None,
            "resolved_reason": reason,
            "resolved_comment": comment or None,
            "updated_at": now,
        },
    )
    _event(
        session,
        alert,
        principal,
        "resolve",
        {"reason": reason, "comment": comment, "from": previous},
        now,
    )


def bulk_acknowledge(
    session: Session, alert_ids: list[int], principal: Principal, now: dt.datetime | None = None
) -> tuple[int, int]:
    """Acknowledge several alerts; returns (acknowledged, skipped)."""
    done = skipped = 0
    for alert_id in dict.fromkeys(alert_ids):
        try:
            alert = get_alert(session, alert_id, principal)
            if acknowledge(session, alert, principal, now):
                done += 1
            else:
                skipped += 1
        except ActionError:
            skipped += 1
    return done, skipped


def wake_expired_snoozes(session: Session, now: dt.datetime | None = None) -> int:
    """Return snoozed alerts whose date has come to ``new`` (audited as the system)."""
    now = now or utcnow()
    ids = session.scalars(
        select(Alert.id).where(Alert.status == "snoozed", Alert.snoozed_until <= now)
    ).all()
    woken = 0
    for alert_id in ids:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.status == "snoozed")
            .values(status="new", snoozed_until=None, updated_at=now)
            .execution_options(synchronize_session="fetch")
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.add(
                AlertEvent(
                    alert_id=alert_id,
                    user_id=None,
                    actor="system",
                    action="snooze_ended",
                    detail={},
                    at=now,
                )
            )
            woken += 1
    return woken
