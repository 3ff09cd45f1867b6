"""AuditEvents of CDS Hooks calls: they land on the real FHIR engine (which validates
every resource it stores), recording never slows a call down when the engine is stopped,
and the spilled events arrive once it is back; the NDJSON sink and ``mprtm audit
export``."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from cds.app import create_app
from cds.cli import main as cli
from cds.config import Settings
from cds.hooks.blueprint import set_scorer
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import ISS, RuleScorer, auth, full_prefetch, hook_body, service_url
from tests.pacs.orthanc_server import free_port
from tests.servers.fhir_engine import FhirEngine, start_engine

SERVICE = "mprtm-hf-risk-patient-view"


def _audit_events(base_url: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base_url}/AuditEvent", params={"_count": "500"}, timeout=30)
    r.raise_for_status()
    return [e["resource"] for e in r.json().get("entry", [])]


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**audit: Any) -> Flask:
        values = {f"audit__{k}": v for k, v in audit.items()}
        s = make_settings().replace(
            audit__spill_dir=str(tmp_path / f"spill{len(apps)}"),
            audit__flush_interval_s=0.2,
            **values,
        )
        app = create_app(s)
        set_scorer(app, RuleScorer())
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["mprtm.audit"].close()
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def _call(app: Flask, token: TokenFactory, patient: str) -> float:
    client = app.test_client()
    t0 = time.perf_counter()
    r = client.post(
        service_url(SERVICE),
        json=hook_body(patient, prefetch=full_prefetch(patient)),
        headers=auth(token(service_url(SERVICE))),
    )
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.get_data(as_text=True)
    return elapsed


@pytest.mark.fhir_server
def test_a_hook_call_leaves_a_valid_audit_event_on_the_fhir_engine(
    make_app: Callable[..., Flask], token: TokenFactory, fhir_engine: FhirEngine
) -> None:
    fhir_engine.reset(data=True)
    app = make_app(sink="fhir", fhir_url=fhir_engine.base_url)
    _call(app, token, "pat-audit-1")
    bad = app.test_client().post(service_url(SERVICE), json=hook_body("pat-audit-1"))  # no JWT
    assert bad.status_code == 401
    auditor = app.extensions["mprtm.audit"]
    assert auditor.flush(30)
    events = _audit_events(fhir_engine.base_url)
    assert len(events) == 2 and auditor.counters.as_dict()["written"] == 2
    ok = next(e for e in events if e["outcome"] == "0")
    assert ok["entity"][0]["what"]["reference"] == "Patient/pat-audit-1"
    assert ok["agent"][0]["who"]["identifier"]["value"] == ISS
    assert ok["entity"][1]["name"] == f"cds-services/{SERVICE}"
    refused = next(e for e in events if e["outcome"] != "0")
    assert refused["outcome"] == "4" and len(refused["entity"]) == 1
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "mprtm_audit_events_written_total 2" in metrics
    assert "mprtm_audit_events_dropped_total 0" in metrics


@pytest.mark.fhir_server
def test_stopped_fhir_engine_costs_no_latency_and_events_arrive_after_restart(
    make_app: Callable[..., Flask], token: TokenFactory
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/fhir"
    quiet = make_app(sink="none")
    down = make_app(sink="fhir", fhir_url=url, timeout_s=2.0)
    for app in (quiet, down):  # warm up both (imports, first database connections)
        _call(app, token, "pat-warm")
    base = [_call(quiet, token, f"pat-q{k}") for k in range(15)]
    with_audit = [_call(down, token, f"pat-d{k}") for k in range(15)]
    # median latency with the audit repository down: the same as without auditing
    # (generous bounds: this machine is shared)
    assert statistics.median(with_audit) <= 1.5 * statistics.median(base) + 0.01
    auditor = down.extensions["mprtm.audit"]
    assert auditor.flush(30)
    assert auditor.pending_spill() == 16 and auditor.counters.as_dict()["written"] == 0
    with start_engine(["--port", str(port)]) as engine:
        assert engine.base_url == url
        deadline = time.monotonic() + 30
        while auditor.pending_spill() and time.monotonic() < deadline:
            time.sleep(0.1)
        events = _audit_events(engine.base_url)
    assert auditor.pending_spill() == 0
    patients = {e["entity"][0]["what"]["reference"] for e in events}
    assert patients == {"Patient/pat-warm"} | {f"Patient/pat-d{k}" for k in range(15)}


def test_ndjson_sink_and_audit_export(
    make_app: Callable[..., Flask],
    token: TokenFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "audit"
    app = make_app(sink="ndjson", ndjson_dir=str(folder), queue_size=1)
    _call(app, token, "pat-n1")
    assert app.extensions["mprtm.audit"].flush(30)
    today = dt.datetime.now(dt.UTC).date()
    day_file = folder / f"audit-{today.isoformat()}.ndjson"
    assert [
        json.loads(x)["entity"][0]["what"]["reference"] for x in day_file.read_text().splitlines()
    ] == ["Patient/pat-n1"]
    # a full queue drops the event and counts it, the call itself is unaffected
    auditor = app.extensions["mprtm.audit"]
    for _ in range(50):
        auditor.record({"resourceType": "AuditEvent", "recorded": today.isoformat()})
    assert auditor.counters.as_dict()["dropped"] > 0
    auditor.flush(30)
    config = tmp_path / "mprtm.toml"
    config.write_text(
        f'[audit]\nsink = "ndjson"\nndjson_dir = "{folder}"\nspill_dir = "{tmp_path / "none"}"\n'
    )
    out = tmp_path / "export.ndjson"
    assert (
        cli(
            [
                "--config",
                str(config),
                "audit",
                "export",
                "--since",
                today.isoformat(),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert exported[0]["entity"][0]["what"]["reference"] == "Patient/pat-n1"
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert cli(["--config", str(config), "audit", "export", "--since", tomorrow]) == 0
    assert capsys.readouterr().out == ""
