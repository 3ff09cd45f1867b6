"""The inbox list: one row per patient with every alert that matches the filters, sorted,
paginated and counted in SQL.

The default order (``triage``) answers "who needs attention today": the patient's highest
alert tier, then their highest alert probability, then how much their risk of the alert
outcome rose since the nightly run before."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session, aliased

from cds.db.models import ALERT_REASONS, ALERT_STATUSES, Alert, Patient, Prediction, User
from cds.inbox.actions import OPEN_STATUSES

STATUS_CHOICES = ("open", *ALERT_STATUSES, "all")
TIER_CHOICES = ("high", "moderate", "low")
SORT_CHOICES = ("triage", "created", "probability", "tier", "patient", "updated")
PER_PAGE_CHOICES = (10, 25, 50, 100)

_TIER_RANK = case({"high": 3, "moderate": 2, "low": 1}, value=Alert.tier, else_=0)
_TIERS_BY_RANK = {3: "high", 2: "moderate", 1: "low"}


@dataclass(frozen=True)
class AlertQuery:
    """The inbox filters as parsed from the query string (invalid values fall back).

    Args:
        status: ``open`` (not resolved), one status, or ``all``.
        tier: one tier or "" for any.
        reason: one alert reason or "" for any.
        mine: only alerts assigned to the signed-in user.
        cohort: one patient cohort or "" for any.
        date_from: alerts raised on or after this day (UTC).
        date_to: alerts raised on or before this day (UTC).
        patient: a FHIR id or identifier prefix.
        sort: one of :data:`SORT_CHOICES` (``triage``: tier, risk, rise).
        direction: ``asc`` or ``desc``.
        page: 1-based page number.
        per_page: one of :data:`PER_PAGE_CHOICES`.
    """

    status: str = "open"
    tier: str = ""
    reason: str = ""
    mine: bool = False
    cohort: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    patient: str = ""
    sort: str = "triage"
    direction: str = "desc"
    page: int = 1
    per_page: int = 25
    problems: tuple[str, ...] = field(default=(), compare=False)

    def args(self, **changes: Any) -> dict[str, str]:
        """Query-string arguments for a link to this query with ``changes`` applied."""
        q = replace(self, **changes)
        out = {
            "status": q.status,
            "tier": q.tier,
            "reason": q.reason,
            "cohort": q.cohort,
            "patient": q.patient,
            "sort": q.sort,
            "dir": q.direction,
            "page": str(q.page),
            "per_page": str(q.per_page),
            "from": q.date_from.isoformat() if q.date_from else "",
            "to": q.date_to.isoformat() if q.date_to else "",
            "mine": "1" if q.mine else "",
        }
        return {k: v for k, v in out.items() if v}


#: Filter dates outside these years are refused (no alert is older or newer).
_YEARS = (1900, 9998)
#: Highest page number read (beyond it no page holds rows; keeps OFFSET in range).
MAX_PAGE = 100_000


def _date(raw: str, name: str, problems: list[str]) -> dt.date | None:
    if not raw:
        return None
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        problems.append(f"{name}: not a date (YYYY-MM-DD), ignored")
        return None
    if not _YEARS[0] <= day.year <= _YEARS[1]:
        problems.append(f"{name}: year outside {_YEARS[0]}-{_YEARS[1]}, ignored")
        return None
    return day


def _int(raw: str, default: int) -> int:
    try:
        value = int(raw) if len(raw) <= 12 else default
    except ValueError:
        return default
    return value


def parse_query(args: Mapping[str, str]) -> AlertQuery:
    """An :class:`AlertQuery` from request arguments; problems are listed, not raised."""
    problems: list[str] = []

    def choice(name: str, choices: tuple[str, ...], default: str) -> str:
        raw = args.get(name, default) or default
        if raw not in choices:
            problems.append(f"{name}: unknown value, ignored")
            return default
        return raw

    per_page = _int(args.get("per_page", "25"), 25)
    if per_page not in PER_PAGE_CHOICES:
        per_page = 25
    return AlertQuery(
        status=choice("status", STATUS_CHOICES, "open"),
        tier=choice("tier", ("", *TIER_CHOICES), ""),
        reason=choice("reason", ("", *ALERT_REASONS), ""),
        mine=args.get("mine", "") in ("1", "on", "true"),
        cohort=args.get("cohort", "").strip()[:200],
        date_from=_date(args.get("from", ""), "from", problems),
        date_to=_date(args.get("to", ""), "to", problems),
        patient=args.get("patient", "").strip()[:128],
        sort=choice("sort", SORT_CHOICES, "triage"),
        direction=choice("dir", ("asc", "desc"), "desc"),
        page=min(MAX_PAGE, max(1, _int(args.get("page", "1"), 1))),
        per_page=per_page,
        problems=tuple(problems),
    )


@dataclass
class AlertRow:
    alert: Alert
    assignee: str | None


@dataclass
class PatientRow:
    """One patient of the list: their matching alerts (highest tier first) and the rise of
    their risk since the nightly run before (None when there is no earlier run)."""

    patient: Patient
    alerts: list[AlertRow]
    tier: str
    probability: float | None
    rise: float | None

    @property
    def lead(self) -> Alert:
        """The alert that puts the patient where they are in the list."""
        return self.alerts[0].alert


@dataclass
class AlertPage:
    rows: list[PatientRow]
    total: int
    n_alerts: int
    page: int
    pages: int
    status_counts: dict[str, int]
    tier_counts: dict[str, int]


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)


def _conditions(q: AlertQuery, user_id: int | None, *, with_status: bool) -> list[Any]:
    conds: list[Any] = []
    if with_status and q.status == "open":
        conds.append(Alert.status.in_(OPEN_STATUSES))
    elif with_status and q.status != "all":
        conds.append(Alert.status == q.status)
    if q.tier:
        conds.append(Alert.tier == q.tier)
    if q.reason:
        conds.append(Alert.reason == q.reason)
    if q.mine:
        conds.append(Alert.assignee_id == user_id)
    if q.cohort:
        conds.append(Patient.cohort == q.cohort)
    if q.date_from:
        conds.append(Alert.created_at >= _day_start(q.date_from))
    if q.date_to:
        conds.append(Alert.created_at < _day_start(q.date_to + dt.timedelta(days=1)))
    if q.patient:
        like = q.patient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(
            (Patient.fhir_id.like(like, escape="\\")) | (Patient.identifier.like(like, escape="\\"))
        )
    return conds


def _count_from(q: AlertQuery) -> Select[Any]:
    """``alerts`` alone, joined to ``patients`` only when a patient column is filtered."""
    if q.cohort or q.patient:
        return select(Alert).join(Patient, Alert.patient_id == Patient.id)
    return select(Alert)


def _rise(outcome: str) -> Any:
    """Per patient: the outcome's probability in the newest nightly prediction minus the one
    before (NULL without two)."""
    p = Prediction.probabilities[outcome].as_float()
    ranked = (
        select(
            Prediction.patient_id.label("patient_id"),
            p.label("p"),
            func.row_number()
            .over(
                partition_by=Prediction.patient_id,
                order_by=(Prediction.created_at.desc(), Prediction.id.desc()),
            )
            .label("n"),
        )
        .where(Prediction.source == "batch")
        .subquery()
    )
    latest = func.max(case((ranked.c.n == 1, ranked.c.p)))
    before = func.max(case((ranked.c.n == 2, ranked.c.p)))
    return (
        select(ranked.c.patient_id, (latest - before).label("rise"))
        .where(ranked.c.n <= 2)
        .group_by(ranked.c.patient_id)
        .subquery()
    )


def list_alerts(
    session: Session, q: AlertQuery, user_id: int | None, outcome: str = "death"
) -> AlertPage:
    """One page of patients with alerts matching ``q``, plus alert counts by status and tier.

    Args:
        session: database session.
        q: filters, sort and page.
        user_id: the signed-in user (for ``mine``).
        outcome: the alert outcome whose rise orders equal risks (``[alerts] outcome``).
    """
    conds = _conditions(q, user_id, with_status=True)
    tier_counts = {t: 0 for t in TIER_CHOICES}
    n_alerts = 0
    by_tier = _count_from(q).with_only_columns(Alert.tier, func.count(Alert.id))
    for tier, n in session.execute(by_tier.where(*conds).group_by(Alert.tier)):
        tier_counts[tier] = tier_counts.get(tier, 0) + n
        n_alerts += n
    per_patient = (
        _count_from(q)
        .with_only_columns(
            Alert.patient_id.label("patient_id"),
            func.max(_TIER_RANK).label("tier_rank"),
            func.max(Alert.probability).label("probability"),
            func.max(Alert.created_at).label("created"),
            func.max(Alert.updated_at).label("updated"),
        )
        .where(*conds)
        .group_by(Alert.patient_id)
        .subquery()
    )
    total = session.scalar(select(func.count()).select_from(per_patient)) or 0
    pages = max(1, math.ceil(total / q.per_page))
    page = min(q.page, pages)
    rise = _rise(outcome)
    keys: dict[str, list[Any]] = {
        "triage": [
            per_patient.c.tier_rank,
            per_patient.c.probability,
            func.coalesce(rise.c.rise, 0.0),
        ],
        "created": [per_patient.c.created],
        "probability": [per_patient.c.probability],
        "tier": [per_patient.c.tier_rank, per_patient.c.probability],
        "patient": [Patient.fhir_id],
        "updated": [per_patient.c.updated],
    }
    desc = q.direction == "desc"
    order = [k.desc() if desc else k.asc() for k in keys[q.sort]]
    order.append(Patient.id.desc() if desc else Patient.id.asc())
    found = session.execute(
        select(Patient, per_patient.c.tier_rank, per_patient.c.probability, rise.c.rise)
        .join(per_patient, per_patient.c.patient_id == Patient.id)
        .outerjoin(rise, rise.c.patient_id == Patient.id)
        .order_by(*order)
        .limit(q.per_page)
        .offset((page - 1) * q.per_page)
    ).all()
    assignee = aliased(User)
    alerts: dict[int, list[AlertRow]] = {}
    if found:
        for a, name in session.execute(
            select(Alert, assignee.username)
            .join(Patient, Alert.patient_id == Patient.id)
            .outerjoin(assignee, Alert.assignee_id == assignee.id)
            .where(*conds, Alert.patient_id.in_([p.id for p, *_ in found]))
            .order_by(_TIER_RANK.desc(), Alert.probability.desc(), Alert.id.desc())
        ):
            alerts.setdefault(a.patient_id, []).append(AlertRow(a, name))
    rows = [
        PatientRow(
            patient=p,
            alerts=alerts.get(p.id, []),
            tier=_TIERS_BY_RANK.get(int(rank or 0), ""),
            probability=prob,
            rise=None if r is None else float(r),
        )
        for p, rank, prob, r in found
    ]
    others = _conditions(q, user_id, with_status=False)
    status_counts = {s: 0 for s in ALERT_STATUSES}
    by_status = _count_from(q).with_only_columns(Alert.status, func.count(Alert.id))
    for status, n in session.execute(by_status.where(*others).group_by(Alert.status)):
        status_counts[status] = n
    status_counts["open"] = sum(status_counts[s] for s in OPEN_STATUSES)
    status_counts["all"] = status_counts["open"] + status_counts["resolved"]
    return AlertPage(
        rows=rows,
        total=total,
        n_alerts=n_alerts,
        page=page,
        pages=pages,
        status_counts=status_counts,
        tier_counts={t: tier_counts.get(t, 0) for t in TIER_CHOICES},
    )


def cohorts(session: Session) -> list[str]:
    return list(session.scalars(select(Patient.cohort).distinct().order_by(Patient.cohort)))
