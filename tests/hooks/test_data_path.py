"""Where a card's numbers come from: nightly result, prefetch, on demand, time budget.

Prefetch semantics from CDS Hooks 2.0 ("Prefetch Template"): a key with a value is data; a
key sent as null means the EHR has no data; an absent key is left to the service to fetch
itself (tested against the real FHIR engine in test_fhir_fallback.py); with neither
prefetch nor FHIR access the service "SHALL respond with an HTTP 412".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.observation import Observation
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds.app import create_app
from cds.config import Settings
from cds.db.models import IssuedCard, Prediction
from cds.hooks import set_scorer
from cds.hooks.errors import ScoringError
from tests.hooks.conformance import check_response
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    LVEF,
    PV,
    RuleScorer,
    add_cached_image,
    add_prediction,
    auth,
    full_prefetch,
    hook_body,
    observation,
    service_url,
)


def post(client: FlaskClient, token: TokenFactory, body: Any, service: str = PV) -> Any:
    resp = client.post(
        f"/cds-services/{service}", json=body, headers=auth(token(service_url(service)))
    )
    assert resp.status_code != 500
    return resp


def test_fresh_nightly_result_is_used_without_scoring(
    client: FlaskClient, token: TokenFactory, sessions: Any, scorer: RuleScorer
) -> None:
    add_prediction(sessions, "p-n", age_hours=30)  # fresh_hours = 36
    body = post(client, token, hook_body("p-n", prefetch=full_prefetch("p-n"))).get_json()
    check_response(body)
    assert "nightly" in body["cards"][0]["summary"]
    assert scorer.calls == []


def test_nightly_result_checked_unchanged_is_fresh_and_says_so(
    client: FlaskClient, token: TokenFactory, sessions: Any, scorer: RuleScorer
) -> None:
    """Scored 80 hours ago, found unchanged by last night's run: the nightly card, with
    both times, and no scoring."""
    add_prediction(sessions, "p-chk", age_hours=80, checked_hours=3)  # fresh_hours = 36
    body = post(client, token, hook_body("p-chk", prefetch=full_prefetch("p-chk"))).get_json()
    check_response(body)
    card = body["cards"][0]
    assert "nightly" in card["summary"] and "checked" in card["summary"]
    assert "Not refreshed" not in card["summary"]
    assert "no new data" in card["detail"] and "scored" in card["detail"]
    assert scorer.calls == []


def test_stale_nightly_means_on_demand_from_prefetch(
    app: Flask, client: FlaskClient, token: TokenFactory, sessions: Any, scorer: RuleScorer
) -> None:
    add_prediction(sessions, "p-od", age_hours=50, p_death=0.2)
    body = post(client, token, hook_body("p-od", prefetch=full_prefetch("p-od"))).get_json()
    check_response(body)
    [card] = body["cards"]
    assert "computed now" in card["summary"]
    [(record, image)] = scorer.calls
    assert all(isinstance(o, Observation) for o in record.observations)
    assert {o.id for o in record.observations} == {"lvef-1", "bnp-1"}
    assert record.patient.gender == "male" and image is None
    # p = 0.05 + 0.2 (LVEF 30) + 0.15 (NT-proBNP 3500) = 40 %, vs 20 % in the nightly run
    assert "40%" in card["summary"] and "+20 pts since last run" in card["summary"]
    assert "Computed on demand" in card["detail"]
    # the rule's parts: reference 5 %, measurements +35 points, no notes or MRI
    assert (
        "typical patients 5.0%; clinical measurements +35.0, medications and notes ±0.0, "
        "LGE cardiac MRI ±0.0 percentage points; together 40.0%"
    ) in card["detail"]
    app.extensions["mprtm.hooks"].engine.writer.flush()  # written behind
    with sessions() as s:
        pred = s.scalars(select(Prediction).where(Prediction.source == "on_demand")).one()
        issued = s.scalars(select(IssuedCard)).one()
    assert pred.probabilities["death"] == pytest.approx(0.40)
    assert pred.contributions["death"] == {
        "reference": 0.05,
        "numeric": 0.35,
        "text": 0.0,
        "image": 0.0,
    }
    assert issued.prediction_id == pred.id


def test_no_nightly_on_demand_and_cached_image_only(
    client: FlaskClient, token: TokenFactory, sessions: Any, scorer: RuleScorer
) -> None:
    emb = add_cached_image(sessions, "p-img", model_version="test-rule", burden=0.25)
    add_cached_image(sessions, "p-img", model_version="another-model", burden=0.9)
    body = post(client, token, hook_body("p-img", prefetch=full_prefetch("p-img"))).get_json()
    [(_, image)] = scorer.calls
    assert image is not None
    np.testing.assert_array_equal(image.features.embedding, emb)
    assert image.features.fibrosis_burden == 0.25  # this model's cache entry, not the other
    detail = body["cards"][0]["detail"]
    assert "LGE cardiac MRI:" in detail and "25.0% of the myocardium" in detail


def test_absent_everything_without_fhir_access_is_412(
    client: FlaskClient, token: TokenFactory
) -> None:
    resp = post(client, token, hook_body("p-none"))
    assert resp.status_code == 412
    assert resp.get_json()["error"] == "precondition-failed"


def test_absent_everything_without_fhir_access_but_stale_nightly_is_labelled(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    add_prediction(sessions, "p-st", age_hours=80)
    body = post(client, token, hook_body("p-st")).get_json()
    check_response(body)
    [card] = body["cards"]
    assert card["summary"].startswith("Not refreshed, last known")
    assert "no prefetch data and no FHIR access" in card["detail"]


@pytest.fixture
def slow_app(make_settings: Callable[..., Settings]) -> Iterator[Flask]:
    app = create_app(make_settings(time_budget_ms=200))
    yield app
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()


def test_time_budget_answers_with_stale_result_then_stores_late_score(
    slow_app: Flask, token: TokenFactory
) -> None:
    scorer = RuleScorer(delay_s=1.0)
    set_scorer(slow_app, scorer)
    sessions = slow_app.extensions["mprtm.sessions"]
    add_prediction(sessions, "p-slow", age_hours=40)
    t0 = time.monotonic()
    resp = post(
        slow_app.test_client(), token, hook_body("p-slow", prefetch=full_prefetch("p-slow"))
    )
    elapsed = time.monotonic() - t0
    assert resp.status_code == 200 and elapsed < 0.6, elapsed
    [card] = resp.get_json()["cards"]
    assert card["summary"].startswith("Not refreshed")
    assert "did not finish within 200 ms" in card["detail"]
    time.sleep(1.2)  # the score finishes in the background and is kept
    slow_app.extensions["mprtm.hooks"].engine.writer.flush()
    with sessions() as s:
        assert s.scalars(select(Prediction).where(Prediction.source == "on_demand")).first()


def test_time_budget_without_nightly_gives_info_card(slow_app: Flask, token: TokenFactory) -> None:
    set_scorer(slow_app, RuleScorer(delay_s=1.0))
    t0 = time.monotonic()
    resp = post(slow_app.test_client(), token, hook_body("p-s2", prefetch=full_prefetch("p-s2")))
    assert time.monotonic() - t0 < 0.6
    [card] = resp.get_json()["cards"]
    assert card["indicator"] == "info" and "not available" in card["summary"]


GARBAGE: list[Any] = [
    "a string",
    12,
    [1, 2, 3],
    {"resourceType": "Bundle", "entry": "nope"},
    {"resourceType": "Bundle", "entry": [1, None, {"resource": "x"}, {"resource": {}}]},
    {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "Observation", "id": "o", "status": 7}}],
    },
    {
        "resourceType": "Observation",
        "id": "x",
        "status": "final",
        "code": {"text": "t"},
        "subject": {"reference": "Patient/p-g"},
        "valueQuantity": {"value": "NaN-ish"},
    },
    {"resourceType": "Patient", "id": "p-g", "birthDate": "not-a-date"},
    {"resourceType": "Patient", "id": "someone-else"},
    {"resourceType": "NoSuchType", "id": "x"},
    {
        "resourceType": "Bundle",
        "entry": [{"resource": observation("o-other", "someone-else", LVEF, 10, "%")}],
    },
    {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    **observation("o-nan", "p-g", LVEF, 1, "%"),
                    "valueQuantity": {"value": 1e400},
                }
            }
        ],
    },
]


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("key", ["patient", "observations", "documents"])
def test_garbage_prefetch_never_gives_a_500(
    client: FlaskClient, token: TokenFactory, garbage: Any, key: str
) -> None:
    prefetch = full_prefetch("p-g")
    prefetch[key] = garbage
    resp = post(client, token, hook_body("p-g", prefetch=prefetch))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    check_response(resp.get_json())


def test_resources_of_another_patient_are_dropped_with_a_note(
    client: FlaskClient, token: TokenFactory, scorer: RuleScorer
) -> None:
    prefetch = full_prefetch("p-x")
    prefetch["observations"]["entry"].append(
        {"resource": observation("intruder", "someone-else", LVEF, 10, "%")}
    )
    body = post(client, token, hook_body("p-x", prefetch=prefetch)).get_json()
    [(record, _)] = scorer.calls
    assert "intruder" not in {o.id for o in record.observations}
    assert "Observation/intruder: refers to another patient" in body["cards"][0]["detail"]


@pytest.mark.parametrize(
    "failure", [ValueError("shape mismatch"), ScoringError("patient p-f: no usable inputs")]
)
def test_scorer_failure_gives_info_card(
    app: Flask, client: FlaskClient, token: TokenFactory, failure: Exception
) -> None:
    set_scorer(app, RuleScorer(fail_with=failure))
    resp = post(client, token, hook_body("p-f", prefetch=full_prefetch("p-f")))
    assert resp.status_code == 200
    [card] = resp.get_json()["cards"]
    assert card["indicator"] == "info"
    assert ("ValueError" in card["detail"]) or ("no usable inputs" in card["detail"])


def test_without_a_scorer_stale_results_are_labelled(
    app: Flask, client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    set_scorer(app, None)
    add_prediction(sessions, "p-ns", age_hours=100)
    body = post(client, token, hook_body("p-ns", prefetch=full_prefetch("p-ns"))).get_json()
    [card] = body["cards"]
    assert card["summary"].startswith("Not refreshed")
    assert "on-demand scoring is not available" in card["detail"]


def test_timed_out_requests_leave_no_backlog(
    make_settings: Callable[..., Settings], token: TokenFactory
) -> None:
    app = create_app(make_settings(time_budget_ms=150, workers=1))
    scorer = RuleScorer(delay_s=0.6)
    set_scorer(app, scorer)
    try:
        c = app.test_client()
        for pid in ("p-b1", "p-b2", "p-b3"):  # the 2nd and 3rd wait behind the 1st and give up
            assert post(c, token, hook_body(pid, prefetch=full_prefetch(pid))).status_code == 200
        time.sleep(1.0)
        assert [r.patient_id for r, _ in scorer.calls] == ["p-b1"]  # queued ones were dropped
        app.extensions["mprtm.hooks"].engine.writer.flush()
        with app.extensions["mprtm.sessions"]() as s:
            rows = s.scalars(select(Prediction).where(Prediction.source == "on_demand")).all()
        assert len(rows) == 1  # the one that ran late is kept
    finally:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def test_overload_is_shed_not_queued(
    make_settings: Callable[..., Settings], token: TokenFactory
) -> None:
    import threading

    app = create_app(make_settings(time_budget_ms=3000, workers=1))
    scorer = RuleScorer(delay_s=0.8)
    set_scorer(app, scorer)
    out: dict[str, Any] = {}

    def call(pid: str) -> None:
        resp = post(app.test_client(), token, hook_body(pid, prefetch=full_prefetch(pid)))
        out[pid] = resp.get_json()["cards"][0]

    try:
        threads = []
        for pid in ("p-o1", "p-o2", "p-o3"):  # 1 runs, 1 waits, the 3rd is shed
            t = threading.Thread(target=call, args=(pid,))
            t.start()
            threads.append(t)
            time.sleep(0.15)
        for t in threads:
            t.join()
        assert "computed now" in out["p-o1"]["summary"]
        assert "computed now" in out["p-o2"]["summary"]
        assert out["p-o3"]["indicator"] == "info"
        assert "scorer is busy" in out["p-o3"]["detail"]
        assert len(scorer.calls) == 2
    finally:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()
