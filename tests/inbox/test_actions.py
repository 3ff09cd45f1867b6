"""Every alert action through the web forms, with its audit trail and database effect."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sqlalchemy import select

from cds.db.models import Alert, AlertEvent, User, utcnow
from cds.inbox import actions
from cds.inbox.auth import Principal
from cds.inbox.errors import ActionError

from . import factory
from .conftest import token_of


def post(client: Any, path: str, **form: str) -> Any:
    return client.post(path, data={"csrf_token": token_of(client), **form})


def reload(dbs: Any, alert_id: int) -> Alert:
    dbs.expire_all()
    alert = dbs.get(Alert, alert_id)
    assert alert is not None
    return alert


def events(dbs: Any, alert_id: int) -> list[AlertEvent]:
    dbs.expire_all()
    return list(
        dbs.scalars(
            select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)
        )
    )


def audit_rows(client: Any, fhir_id: str) -> list[list[str]]:
    """The audit table of a patient page as lists of cell texts (newest first)."""
    html = client.get(f"/inbox/patients/{fhir_id}").get_data(as_text=True)
    body = html.split('id="audit"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = []
    for tr in body.split("<tr>")[1:]:
        cells = re.findall(r"<td>(.*?)</td>", tr, flags=re.S)
        rows.append([re.sub(r"<[^>]+>", "", c).strip() for c in cells])
    return rows


def test_acknowledge(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["high"].id
    resp = post(clinician, f"/inbox/alerts/{alert_id}/acknowledge")
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith(f"/inbox/patients/p-high#alert-{alert_id}")
    assert reload(dbs, alert_id).status == "acknowledged"
    last = events(dbs, alert_id)[-1]
    assert (last.action, last.actor, last.detail) == ("acknowledge", "alice", {"from": "new"})
    assert last.user_id == data["users"]["alice"].id
    audit = audit_rows(clinician, "p-high")
    assert audit[0][1:4] == ["alice", "acknowledged", str(alert_id)]
    # Twice: no second event.
    again = post(clinician, f"/inbox/alerts/{alert_id}/acknowledge")
    assert again.status_code == 303
    assert len(events(dbs, alert_id)) == 2


def test_assign_to_user_me_and_nobody(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["mod"].id
    admin_id = data["users"]["admin"].id
    assert (
        post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee=str(admin_id)).status_code
        == 303
    )
    assert reload(dbs, alert_id).assignee_id == admin_id
    assert post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee="me").status_code == 303
    assert reload(dbs, alert_id).assignee_id == data["users"]["alice"].id
    assert post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee="none").status_code == 303
    assert reload(dbs, alert_id).assignee_id is None
    details = [e.detail for e in events(dbs, alert_id) if e.action == "assign"]
    assert details == [
        {"to": "root-admin", "from": None},
        {"to": "alice", "from": "root-admin"},
        {"to": None, "from": "alice"},
    ]


def test_assign_refuses_unknown_or_inactive_user(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["mod"].id
    resp = post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee="9999")
    assert resp.status_code == 400
    assert b"no active user with id 9999" in resp.data
    ghost = factory.user(dbs, "ghost")
    ghost.active = False
    dbs.commit()
    assert (
        post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee=str(ghost.id)).status_code
        == 400
    )
    assert post(clinician, f"/inbox/alerts/{alert_id}/assign", assignee="abc").status_code == 400
    assert reload(dbs, alert_id).assignee_id is None


def test_snooze(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["low"].id
    until = utcnow().date() + dt.timedelta(days=7)
    resp = post(clinician, f"/inbox/alerts/{alert_id}/snooze", until=until.isoformat())
    assert resp.status_code == 303
    alert = reload(dbs, alert_id)
    assert alert.status == "snoozed"
    assert alert.snoozed_until is not None and alert.snoozed_until.date() == until
    assert events(dbs, alert_id)[-1].detail == {"until": until.isoformat(), "from": "new"}


@pytest.mark.parametrize("days, status", [(0, 400), (-3, 400), (366, 400)])
def test_snooze_date_must_be_after_today_and_within_a_year(
    clinician: Any, data: Any, dbs: Any, days: int, status: int
) -> None:
    alert_id = data["alerts"]["low"].id
    until = utcnow().date() + dt.timedelta(days=days)
    resp = post(clinician, f"/inbox/alerts/{alert_id}/snooze", until=until.isoformat())
    assert resp.status_code == status
    assert b"snooze_until" in resp.data
    assert reload(dbs, alert_id).status == "new"


def test_snooze_bad_date(clinician: Any, data: Any) -> None:
    resp = post(clinician, f"/inbox/alerts/{data['alerts']['low'].id}/snooze", until="31/12/26")
    assert resp.status_code == 400


def test_resolve_clears_open_key(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["high"].id
    assert reload(dbs, alert_id).open_key is not None
    resp = post(
        clinician,
        f"/inbox/alerts/{alert_id}/resolve",
        reason="treatment_adjusted",
        comment="Diuretic dose increased.",
    )
    assert resp.status_code == 303
    alert = reload(dbs, alert_id)
    assert (alert.status, alert.open_key) == ("resolved", None)
    assert alert.resolved_reason == "treatment_adjusted"
    assert alert.resolved_comment == "Diuretic dose increased."
    last = events(dbs, alert_id)[-1]
    assert last.action == "resolve" and last.detail["comment"] == "Diuretic dose increased."
    page = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "Diuretic dose increased." in page and "Treatment adjusted" in page
    top = audit_rows(clinician, "p-high")[0]
    assert top[1:3] == ["alice", "resolved"] and "Diuretic dose increased." in top[4]
    # A new alert with the same reason may now be opened for this patient.
    factory.alert(dbs, data["patients"]["p-high"], reason="high_tier")
    dbs.commit()


def test_resolve_validation(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["high"].id
    url = f"/inbox/alerts/{alert_id}/resolve"
    assert post(clinician, url, reason="because", comment="").status_code == 400
    other = post(clinician, url, reason="other", comment="  ")
    assert other.status_code == 400 and b"required when the reason is" in other.data
    long = post(clinician, url, reason="other", comment="x" * 2001)
    assert long.status_code == 400
    assert reload(dbs, alert_id).status == "new"
    assert post(clinician, url, reason="other", comment="Seen in clinic").status_code == 303


def test_resolved_alert_refuses_every_action(clinician: Any, data: Any, dbs: Any) -> None:
    alert_id = data["alerts"]["old"].id
    until = (utcnow().date() + dt.timedelta(days=3)).isoformat()
    for action, form in (
        ("acknowledge", {}),
        ("assign", {"assignee": "me"}),
        ("snooze", {"until": until}),
        ("resolve", {"reason": "other", "comment": "again"}),
    ):
        resp = post(clinician, f"/inbox/alerts/{alert_id}/{action}", **form)
        assert resp.status_code == 409, action
        assert b"is resolved" in resp.data
    assert [e.action for e in events(dbs, alert_id)] == ["created"]


def test_unknown_alert_is_404(clinician: Any, data: Any) -> None:
    assert post(clinician, "/inbox/alerts/4242/acknowledge").status_code == 404


def test_bulk_acknowledge(clinician: Any, data: Any, dbs: Any) -> None:
    ids = [data["alerts"][k].id for k in ("high", "mod", "old")]
    resp = post(
        clinician,
        "/inbox/alerts/acknowledge",
        alert_id=[str(i) for i in ids],
        next="/inbox/?tier=high",
    )  # type: ignore[arg-type]
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox/?tier=high"
    page = clinician.get("/inbox/?tier=high").get_data(as_text=True)
    assert "Acknowledged 2 alerts. 1 skipped" in page
    assert reload(dbs, ids[0]).status == reload(dbs, ids[1]).status == "acknowledged"
    assert reload(dbs, ids[2]).status == "resolved"
    assert post(clinician, "/inbox/alerts/acknowledge", alert_id="x").status_code == 400
    too_many = [str(i) for i in range(201)]
    assert post(clinician, "/inbox/alerts/acknowledge", alert_id=too_many).status_code == 400  # type: ignore[arg-type]
    none = post(clinician, "/inbox/alerts/acknowledge")
    assert none.status_code == 302


def test_expired_snoozes_come_back_as_new(dbs: Any, data: Any) -> None:
    alert = data["alerts"]["low"]
    principal = Principal(name="alice", role="clinician", user_id=data["users"]["alice"].id)
    now = utcnow()
    actions.snooze(dbs, alert, principal, now.date() + dt.timedelta(days=2), now=now)
    dbs.commit()
    assert actions.wake_expired_snoozes(dbs, now=now + dt.timedelta(days=1)) == 0
    assert actions.wake_expired_snoozes(dbs, now=now + dt.timedelta(days=2)) == 1
    dbs.commit()
    assert reload(dbs, alert.id).status == "new"
    assert [e.action for e in events(dbs, alert.id)][-1] == "snooze_ended"
    assert actions.wake_expired_snoozes(dbs, now=now + dt.timedelta(days=3)) == 0


def test_concurrent_change_is_detected(dbs: Any, data: Any, app: Any) -> None:
    """Two sessions act on the same alert: the second sees the first's resolve and stops."""
    from cds.db import session_factory

    other = session_factory(app.extensions["mprtm.engine"])()
    principal = Principal(name="alice", role="clinician", user_id=data["users"]["alice"].id)
    stale = other.get(Alert, data["alerts"]["mod"].id)
    assert stale is not None and stale.status == "new"
    fresh = dbs.get(Alert, data["alerts"]["mod"].id)
    actions.resolve(dbs, fresh, principal, "reviewed_no_change", "")
    dbs.commit()
    with pytest.raises(ActionError) as info:
        actions.acknowledge(other, stale, principal)
    assert info.value.status == 409
    other.rollback()
    other.close()


def test_users_listed_for_assignment_are_active_only(clinician: Any, dbs: Any) -> None:
    ghost = factory.user(dbs, "ghost-user")
    ghost.active = False
    dbs.commit()
    page = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "root-admin" in page and "ghost-user" not in page
    assert dbs.scalar(select(User).where(User.username == "ghost-user")) is not None
