"""The inbox on PostgreSQL: list queries, actions and the audit trail on the real server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select

from cds.app import create_app
from cds.db import session_factory
from cds.db.migrate import upgrade
from cds.db.models import Alert, AlertEvent
from cds.inbox.queries import AlertQuery, list_alerts

from . import factory
from .conftest import login, make_settings, token_of

pytestmark = pytest.mark.postgres


def test_inbox_on_postgres(pg_url: str) -> None:
    upgrade(pg_url)
    base = make_settings("sqlite://")
    app = create_app(
        dataclasses.replace(base, database=dataclasses.replace(base.database, url=pg_url))
    )
    sessions = session_factory(app.extensions["mprtm.engine"])
    with sessions() as s:
        data: dict[str, Any] = factory.demo_dataset(s)
        s.commit()
        high, mod = data["alerts"]["high"].id, data["alerts"]["mod"].id
        page = list_alerts(
            s, AlertQuery(status="all", sort="tier", direction="desc", patient="p-"), None
        )
        assert [r.patient.fhir_id for r in page.rows][:2] in (
            ["p-high", "p-old"],
            ["p-old", "p-high"],
        )
        assert page.status_counts["resolved"] == 1 and page.total == 4
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    assert client.get("/inbox/?tier=high&cohort=hf-clinic&from=2026-11-01").status_code == 200
    token = token_of(client)
    assert (
        client.post(f"/inbox/alerts/{high}/acknowledge", data={"csrf_token": token}).status_code
        == 303
    )
    assert (
        client.post(
            f"/inbox/alerts/{mod}/resolve",
            data={"csrf_token": token, "reason": "patient_contacted", "comment": "Called."},
        ).status_code
        == 303
    )
    assert (
        client.post(f"/inbox/alerts/{mod}/acknowledge", data={"csrf_token": token}).status_code
        == 409
    )
    with sessions() as s:
        assert s.get(Alert, high).status == "acknowledged"
        resolved = s.get(Alert, mod)
        assert resolved is not None and resolved.open_key is None
        actions = s.scalars(
            select(AlertEvent.action).where(AlertEvent.alert_id == mod).order_by(AlertEvent.id)
        ).all()
        assert actions == ["created", "resolve"]
        # The unique open_key allows a fresh alert for the same patient and reason.
        factory.alert(s, data["patients"]["p-mod"], reason="rise")
        s.commit()
    app.extensions["mprtm.engine"].dispose()
