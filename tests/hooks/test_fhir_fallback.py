"""The FHIR fallback against the real FHIR engine (tests/servers): absent prefetch keys are
fetched with the ``fhirAuthorization`` bearer token; null keys are not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from flask import Flask
from flask.testing import FlaskClient

from cds.app import create_app
from cds.hooks import set_scorer
from tests.hooks.conformance import check_response
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    LVEF,
    NTPROBNP,
    PV,
    RuleScorer,
    auth,
    full_prefetch,
    hook_body,
    observation,
    service_url,
)
from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server

TOKEN = "cds-hooks-test-access-token"
PID = "hooks-fb-1"


@pytest.fixture(scope="module")
def loaded(fhir_engine: FhirEngine) -> FhirEngine:
    fhir_engine.put({"resourceType": "Patient", "id": PID, "gender": "female"})
    fhir_engine.put(observation("hooks-fb-lvef", PID, LVEF, 28, "%"))
    fhir_engine.put(observation("hooks-fb-bnp", PID, NTPROBNP, 4100, "pg/mL"))
    fhir_engine.put(
        {
            "resourceType": "Condition",
            "id": "hooks-fb-hf",
            "subject": {"reference": f"Patient/{PID}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "84114007"}]},
        }
    )
    return fhir_engine


@pytest.fixture
def app(make_settings: Any, scorer: RuleScorer, loaded: FhirEngine) -> Iterator[Flask]:
    """The app with the test FHIR engine allowed as the issuer's fhirServer."""
    application = create_app(make_settings(fhir_servers=(loaded.base_url,)))
    set_scorer(application, scorer)
    yield application
    application.extensions["mprtm.hooks"].engine.close()
    application.extensions["mprtm.engine"].dispose()


@pytest.fixture
def engine(loaded: FhirEngine) -> Iterator[FhirEngine]:
    loaded.reset()
    loaded.configure_auth(require=True, tokens=[TOKEN])
    yield loaded
    loaded.configure_auth(require=False)
    loaded.reset()


def _body(engine: FhirEngine, prefetch: dict[str, Any] | None, token: str = TOKEN) -> Any:
    return hook_body(
        PID,
        prefetch=prefetch,
        fhirServer=engine.base_url,
        fhirAuthorization={
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "mprtm-cds",
        },
    )


def _post(client: FlaskClient, jwt_token: TokenFactory, body: Any) -> Any:
    return client.post(f"/cds-services/{PV}", json=body, headers=auth(jwt_token(service_url(PV))))


def test_absent_keys_fetched_from_the_real_engine(
    engine: FhirEngine, client: FlaskClient, token: TokenFactory, scorer: RuleScorer
) -> None:
    resp = _post(client, token, _body(engine, None))
    assert resp.status_code == 200
    check_response(resp.get_json())
    [(record, _)] = scorer.calls
    assert record.patient.gender == "female"
    assert {o.id for o in record.observations} == {"hooks-fb-lvef", "hooks-fb-bnp"}
    assert all(isinstance(o, Observation) for o in record.observations)
    assert [c.id for c in record.conditions] == ["hooks-fb-hf"]
    assert all(isinstance(c, Condition) for c in record.conditions)
    stats = engine.stats()
    assert stats["requests"] >= 7 and stats["byStatus"].get("401", 0) == 0
    assert "computed now" in resp.get_json()["cards"][0]["summary"]


def test_null_keys_are_not_fetched(
    engine: FhirEngine, client: FlaskClient, token: TokenFactory, scorer: RuleScorer
) -> None:
    prefetch = {k: None for k in full_prefetch(PID)}
    prefetch["observations"] = full_prefetch(PID)["observations"]
    resp = _post(client, token, _body(engine, prefetch))
    assert resp.status_code == 200
    assert engine.stats()["requests"] == 0
    [(record, _)] = scorer.calls
    assert {o.id for o in record.observations} == {"lvef-1", "bnp-1"}  # prefetched ones


def test_a_token_the_server_refuses_is_a_data_note(
    engine: FhirEngine, client: FlaskClient, token: TokenFactory
) -> None:
    prefetch = full_prefetch(PID)
    del prefetch["conditions"]
    resp = _post(client, token, _body(engine, prefetch, token="not-the-token"))
    assert resp.status_code == 200
    assert engine.stats()["byStatus"].get("401") == 1
    assert "not available: conditions" in resp.get_json()["cards"][0]["detail"]


def test_operation_outcome_prefetch_is_not_refetched(
    engine: FhirEngine, client: FlaskClient, token: TokenFactory, scorer: RuleScorer
) -> None:
    prefetch = full_prefetch(PID)
    prefetch["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    assert _post(client, token, _body(engine, prefetch)).status_code == 200
    assert engine.stats()["requests"] == 0
    assert len(scorer.calls) == 1


def test_all_null_means_no_data_info_card(
    engine: FhirEngine, client: FlaskClient, token: TokenFactory, scorer: RuleScorer
) -> None:
    resp = _post(client, token, _body(engine, {k: None for k in full_prefetch(PID)}))
    assert resp.status_code == 200
    assert engine.stats()["requests"] == 0
    [card] = resp.get_json()["cards"]
    assert card["indicator"] == "info" and "not available" in card["summary"]
    assert scorer.calls == []


@pytest.fixture
def budget_200ms(make_settings: Any, loaded: FhirEngine) -> Iterator[Flask]:
    app = create_app(make_settings(fhir_servers=(loaded.base_url,), time_budget_ms=200))
    set_scorer(app, RuleScorer())
    yield app
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()


def test_a_hanging_fhir_server_is_cut_by_the_time_budget(
    engine: FhirEngine, budget_200ms: Flask, token: TokenFactory
) -> None:
    engine.inject_fault(None, hang_ms=1500, count=20)
    t0 = time.monotonic()
    resp = _post(budget_200ms.test_client(), token, _body(engine, None))
    elapsed = time.monotonic() - t0
    assert resp.status_code == 200 and elapsed < 0.6, elapsed
    [card] = resp.get_json()["cards"]
    assert card["indicator"] == "info"
    assert "did not finish within 200 ms" in card["detail"]
    time.sleep(1.6)  # let the hung requests finish before the next test resets the engine
