"""An inbox session (log-in, a patient's page, an action on an alert) leaves AuditEvents
on the real FHIR engine, which validates each one it stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from cds.app import create_app
from tests.servers.fhir_engine import FhirEngine

from . import factory
from .conftest import login, make_settings, token_of


@pytest.fixture
def audited_app(db_url: str, fhir_engine: FhirEngine, tmp_path: Path) -> Iterator[Flask]:
    fhir_engine.reset(data=True)
    s = make_settings(db_url).replace(
        audit__sink="fhir",
        audit__fhir_url=fhir_engine.base_url,
        audit__spill_dir=str(tmp_path / "spill"),
        audit__flush_interval_s=0.2,
    )
    app = create_app(s, TESTING=True)
    yield app
    app.extensions["mprtm.audit"].close()
    app.extensions["mprtm.engine"].dispose()


@pytest.mark.fhir_server
def test_inbox_session_is_audited_on_the_fhir_engine(
    audited_app: Flask, fhir_engine: FhirEngine, dbs: Any
) -> None:
    data = factory.demo_dataset(dbs)
    dbs.commit()
    client = audited_app.test_client()
    assert login(client, "alice").status_code == 302
    assert client.get("/inbox/patients/p-high").status_code == 200
    alert_id = data["alerts"]["high"].id
    r = client.post(f"/inbox/alerts/{alert_id}/acknowledge", data={"csrf_token": token_of(client)})
    assert r.status_code == 303
    auditor = audited_app.extensions["mprtm.audit"]
    assert auditor.flush(30)
    rsp = httpx.get(f"{fhir_engine.base_url}/AuditEvent", params={"_count": "100"}, timeout=30)
    events = [e["resource"] for e in rsp.json().get("entry", [])]
    assert auditor.counters.as_dict()["written"] == len(events) == 2
    view = next(e for e in events if e["action"] == "R")
    act = next(e for e in events if e["action"] == "U")
    for e in (view, act):
        assert e["entity"][0]["what"]["reference"] == "Patient/p-high"
        assert e["agent"][0]["who"]["identifier"]["value"] == "alice"
    assert view["subtype"][0]["code"] == "read"
    assert act["outcomeDesc"] == f"alert {alert_id}: acknowledge"
