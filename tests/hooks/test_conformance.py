"""Conformance to CDS Hooks 2.0: discovery, both hooks, cards, links, suggestions, feedback."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds.db.models import CardFeedback, IssuedCard
from tests.hooks.conformance import check_card, check_discovery, check_response
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    DC,
    PUBLIC_URL,
    PV,
    add_cached_image,
    add_prediction,
    auth,
    hook_body,
    service_url,
)


def post(client: FlaskClient, token: TokenFactory, service: str, body: Any) -> Any:
    return client.post(
        f"/cds-services/{service}", json=body, headers=auth(token(service_url(service)))
    )


def feedback(client: FlaskClient, token: TokenFactory, service: str, body: Any) -> Any:
    return client.post(
        f"/cds-services/{service}/feedback", json=body, headers=auth(token(service_url(service)))
    )


def test_discovery(client: FlaskClient, token: TokenFactory) -> None:
    resp = client.get("/cds-services", headers=auth(token(service_url())))
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    doc = resp.get_json()
    check_discovery(doc)
    by_id = {s["id"]: s for s in doc["services"]}
    assert by_id[PV]["hook"] == "patient-view"
    assert by_id[DC]["hook"] == "encounter-discharge"
    assert by_id[PV]["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert by_id[DC]["prefetch"]["encounter"] == "Encounter/{{context.encounterId}}"
    assert "10230-1" in by_id[PV]["prefetch"]["observations"]  # LVEF is asked for


def test_patient_view_nightly_card(
    app: Flask, client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    pid = add_prediction(sessions, "p1", age_hours=3, p_death=0.42)
    resp = post(client, token, PV, hook_body("p1"))
    assert resp.status_code == 200
    body = resp.get_json()
    check_response(body)
    [card] = body["cards"]
    assert card["indicator"] == "critical"  # tier high
    assert "HIGH" in card["summary"] and "42%" in card["summary"]
    assert "nightly" in card["summary"]
    detail = card["detail"]
    for outcome in ("All-cause death", "Cardiovascular death", "Rehospitalization", "MACCE"):
        assert outcome in detail
    assert "Modality weights" in detail and "LGE cardiac MRI 0.30" in detail
    assert "What moved the 1-year death risk" in detail and "not recorded" in detail
    assert "fibrosis burden:** 18.0%" in detail
    assert "Input freshness" in detail and "2026-01-10" in detail
    assert "M-PRTM 0.1.0-test" in detail
    assert "trained on synthetic patients" in detail
    assert "no earlier run" in detail
    assert card["source"]["url"] == f"{PUBLIC_URL}/model-card"
    # the issued card is stored with its patient, service and prediction
    app.extensions["mprtm.hooks"].engine.writer.flush()  # written behind
    with sessions() as s:
        issued = s.scalars(select(IssuedCard).where(IssuedCard.card_uuid == card["uuid"])).one()
    assert (issued.patient_fhir_id, issued.service_id, issued.prediction_id) == ("p1", PV, pid)


def test_links_smart_app_context_and_absolute_model_card(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    pid = add_prediction(sessions, "p-links")
    [card] = post(client, token, PV, hook_body("p-links")).get_json()["cards"]
    smart = [lnk for lnk in card["links"] if lnk["type"] == "smart"]
    absolute = [lnk for lnk in card["links"] if lnk["type"] == "absolute"]
    assert len(smart) == 1 and len(absolute) == 1
    assert smart[0]["url"] == f"{PUBLIC_URL}/inbox/launch?patient=p-links"
    ctx = json.loads(smart[0]["appContext"])
    assert ctx == {
        "patientId": "p-links",
        "cardUuid": card["uuid"],
        "serviceId": PV,
        "predictionId": pid,
    }
    assert absolute[0]["url"] == f"{PUBLIC_URL}/model-card"
    assert "appContext" not in absolute[0]


def test_high_tier_suggests_hf_clinic_within_7_days_and_mri_without_recent_lge(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    add_prediction(sessions, "p-sugg", p_death=0.5)
    [card] = post(client, token, DC, hook_body("p-sugg", "encounter-discharge")).get_json()["cards"]
    check_card(card)
    assert card["selectionBehavior"] == "any"
    labels = [s["label"] for s in card["suggestions"]]
    assert any("within 7 days" in x for x in labels)
    assert any("cardiac MRI" in x for x in labels)
    uuids = [s["uuid"] for s in card["suggestions"]]
    assert len(set(uuids)) == len(uuids) == 2
    clinic = card["suggestions"][0]["actions"][0]["resource"]
    assert clinic["resourceType"] == "ServiceRequest"
    assert clinic["subject"] == {"reference": "Patient/p-sugg"}
    assert clinic["encounter"] == {"reference": "Encounter/enc-1"}
    assert clinic["requester"] == {"reference": "Practitioner/pr-1"}
    start = dt.date.fromisoformat(clinic["occurrencePeriod"]["start"])
    end = dt.date.fromisoformat(clinic["occurrencePeriod"]["end"])
    assert (end - start).days == 7
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert reasons["already-arranged"] == "Follow-up already arranged"


def test_recent_lge_study_means_no_mri_suggestion_and_low_tier_no_clinic(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    add_prediction(sessions, "p-low", p_death=0.04)
    add_cached_image(sessions, "p-low", study_date=dt.date.today() - dt.timedelta(days=40))
    [card] = post(client, token, PV, hook_body("p-low")).get_json()["cards"]
    check_card(card)
    assert card["indicator"] == "info"
    assert "suggestions" not in card and "selectionBehavior" not in card


def test_old_lge_study_triggers_mri_suggestion(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    add_prediction(sessions, "p-old", p_death=0.15)
    add_cached_image(sessions, "p-old", study_date=dt.date.today() - dt.timedelta(days=500))
    [card] = post(client, token, PV, hook_body("p-old")).get_json()["cards"]
    assert card["indicator"] == "warning"  # moderate
    [mri] = card["suggestions"]
    assert "cardiac MRI" in mri["label"]
    assert "last LGE study" in mri["actions"][0]["resource"]["reasonCode"][0]["text"]


def test_trend_since_last_run(client: FlaskClient, token: TokenFactory, sessions: Any) -> None:
    add_prediction(sessions, "p-trend", age_hours=26, p_death=0.20)
    add_prediction(sessions, "p-trend", age_hours=2, p_death=0.27, synthetic=False)
    [card] = post(client, token, PV, hook_body("p-trend")).get_json()["cards"]
    assert "+7 pts since last run" in card["summary"]
    assert "▲ +7.0 pts (was 20.0%)" in card["detail"]
    assert "synthetic" not in card["detail"]  # this model version is not a demo model


def test_encounter_discharge_requires_encounter_id(
    client: FlaskClient, token: TokenFactory
) -> None:
    body = hook_body("p1", "encounter-discharge")
    del body["context"]["encounterId"]
    resp = post(client, token, DC, body)
    assert resp.status_code == 400
    assert "encounterId" in resp.get_json()["message"]


def test_unknown_service_is_404(client: FlaskClient, token: TokenFactory) -> None:
    resp = post(client, token, "no-such-service", hook_body("p1"))
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "unknown-service"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"", "no body"),
        (json.dumps({"hookInstance": "x", "context": {"patientId": "p"}}).encode(), "hook"),
        (json.dumps(hook_body("p1", hook="order-sign")).encode(), "does not match"),
        (json.dumps({**hook_body("p1"), "context": "p1"}).encode(), "context"),
        (json.dumps({**hook_body("p1"), "context": {"userId": "x"}}).encode(), "patientId"),
        (json.dumps(hook_body("../../etc")).encode(), "FHIR id"),
        (json.dumps({**hook_body("p1"), "hookInstance": 5}).encode(), "hookInstance"),
        (
            json.dumps(
                {
                    **hook_body("p1"),
                    "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"},
                }
            ).encode(),
            "fhirServer",
        ),
        (json.dumps({**hook_body("p1"), "prefetch": [1, 2]}).encode(), "prefetch"),
    ],
)
def test_malformed_requests_are_400_with_json_error(
    client: FlaskClient, token: TokenFactory, body: bytes, fragment: str
) -> None:
    resp = client.post(
        f"/cds-services/{PV}",
        data=body,
        content_type="application/json",
        headers=auth(token(service_url(PV))),
    )
    assert resp.status_code == 400
    err = resp.get_json()
    assert err["error"] == "bad-request"
    assert fragment in err["message"]


def _issue_card(client: FlaskClient, token: TokenFactory, sessions: Any, pid: str) -> Any:
    add_prediction(sessions, pid, p_death=0.5)
    [card] = post(client, token, PV, hook_body(pid)).get_json()["cards"]
    return card


def test_feedback_accepted_and_overridden_are_stored(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    card = _issue_card(client, token, sessions, "p-fb")
    sid = card["suggestions"][0]["uuid"]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": sid}],
                "outcomeTimestamp": "2026-11-29T10:05:31Z",
            },
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "code": "already-arranged",
                        "system": card["overrideReasons"][0]["system"],
                    },
                    "userComment": "Seen in clinic yesterday.",
                },
                "outcomeTimestamp": "2026-11-29T10:06:00.52Z",
            },
        ]
    }
    resp = feedback(client, token, PV, body)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"stored": 2}
    with sessions() as s:
        rows = s.scalars(select(CardFeedback).order_by(CardFeedback.id)).all()
    assert [r.outcome for r in rows] == ["accepted", "overridden"]
    assert rows[0].accepted_suggestions == [sid]
    assert rows[0].patient_fhir_id == "p-fb" and rows[0].service_id == PV
    assert rows[1].override_reason_code == "already-arranged"
    assert rows[1].override_reason_display == "Follow-up already arranged"  # from our list
    # our own code systems are URLs under the canonical base (<public_url>/fhir by default)
    assert card["overrideReasons"][0]["system"] == (
        f"{PUBLIC_URL}/fhir/CodeSystem/card-override-reason"
    )
    assert card["source"]["topic"]["system"] == f"{PUBLIC_URL}/fhir/CodeSystem/card-topic"
    assert rows[1].override_comment == "Seen in clinic yesterday."


def test_feedback_overridden_without_reason(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    card = _issue_card(client, token, sessions, "p-fb2")
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-29T00:00:00Z",
            }
        ]
    }
    assert feedback(client, token, PV, body).status_code == 200


_UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("item", "drop", "status", "fragment"),
    [
        ({"outcome": "overridden"}, "card", 400, "card"),
        ({"outcome": "liked"}, "", 400, "outcome"),
        ({"outcome": "accepted"}, "", 400, "acceptedSuggestions"),
        ({"outcome": "accepted", "acceptedSuggestions": []}, "", 400, "acceptedSuggestions"),
        ({"outcome": "overridden"}, "outcomeTimestamp", 400, "outcomeTimestamp"),
        ({"outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00"}, "", 400, "zone"),
        ({"outcome": "overridden", "overrideReason": {"reason": {"code": "x"}}}, "", 400, "system"),
        ({"outcome": "overridden", "card": _UNKNOWN}, "", 404, "not issued"),
    ],
)
def test_feedback_errors(
    client: FlaskClient,
    token: TokenFactory,
    sessions: Any,
    item: dict[str, Any],
    drop: str,
    status: int,
    fragment: str,
) -> None:
    card = _issue_card(client, token, sessions, "p-fb3")
    full = {"card": card["uuid"], "outcomeTimestamp": "2026-11-29T10:00:00Z", **item}
    full.pop(drop, None)
    resp = feedback(client, token, PV, {"feedback": [full]})
    assert resp.status_code == status, resp.get_json()
    assert fragment in resp.get_json()["message"]
    with sessions() as s:
        assert s.scalars(select(CardFeedback)).first() is None  # nothing stored


def test_feedback_for_a_card_of_another_service_is_refused(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    card = _issue_card(client, token, sessions, "p-fb4")
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-29T00:00:00Z",
            }
        ]
    }
    resp = feedback(client, token, DC, body)
    assert resp.status_code == 400 and PV in resp.get_json()["message"]


def test_cors_preflight_and_headers(client: FlaskClient, token: TokenFactory) -> None:
    pre = client.options(
        f"/cds-services/{PV}",
        headers={
            "Origin": "https://ehr-ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status_code == 204  # no token needed for a preflight
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    resp = client.get(
        "/cds-services",
        headers={**auth(token(service_url())), "Origin": "https://ehr-ui.example"},
    )
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_origin_list(make_settings: Any) -> None:
    from cds.app import create_app

    app = create_app(make_settings(cors_origins=["https://ehr-ui.example"]))
    c = app.test_client()
    ok = c.options("/cds-services", headers={"Origin": "https://ehr-ui.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr-ui.example"
    assert "Origin" in ok.headers.get("Vary", "")
    bad = c.options("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()


def test_card_links_resolve_in_this_application(make_settings: Any, sessions: Any) -> None:
    from urllib.parse import unquote, urlsplit

    from cds.app import create_app

    app = create_app(make_settings(require_jwt=False).replace(server__demo_login=True))
    try:
        add_prediction(app.extensions["mprtm.sessions"], "p-nav")
        c = app.test_client()
        [card] = c.post(f"/cds-services/{PV}", json=hook_body("p-nav")).get_json()["cards"]
        links = {lnk["type"]: urlsplit(lnk["url"]) for lnk in card["links"]}
        launch = c.get(f"{links['smart'].path}?{links['smart'].query}")
        assert launch.status_code == 302  # demo: through the log-in to the patient page
        assert "/inbox/patients/p-nav" in unquote(launch.headers["Location"])
        assert c.get(links["absolute"].path).status_code == 200  # the model card
    finally:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def test_freshness_from_the_batch_inputs_format(
    client: FlaskClient, token: TokenFactory, sessions: Any
) -> None:
    from sqlalchemy import update

    from cds.db.models import Prediction

    pid = add_prediction(sessions, "p-fresh")
    batch_inputs = {
        "features": {
            "lvef": {"value": 35, "unit": "%", "date": "2026-10-02", "source": "Observation/o1"},
            "creatinine": {
                "value": 99,
                "unit": "umol/L",
                "date": "2026-11-01",
                "source": "Observation/o2",
            },
            "med_beta_blocker": {
                "value": 1,
                "unit": "",
                "date": "2026-09-15",
                "source": "MedicationRequest/m1",
            },
        },
        "medications": ["bisoprolol 5 mg"],
        "notes": [],
        "lge_series": {"series_instance_uid": "1.2.3", "study_date": "20260301", "n_slices": 9},
    }
    with sessions() as s, s.begin():
        s.execute(update(Prediction).where(Prediction.id == pid).values(inputs=batch_inputs))
    [card] = post(client, token, PV, hook_body("p-fresh")).get_json()["cards"]
    assert "- clinical measurements: 2026-11-01" in card["detail"]
    assert "- medication classes: 2026-09-15" in card["detail"]
    assert "- LGE cardiac MRI: 2026-03-01" in card["detail"]


def test_too_large_body_is_a_json_error(client: FlaskClient, token: TokenFactory) -> None:
    big = b'{"hook": "patient-view", "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    resp = client.post(
        f"/cds-services/{PV}",
        data=big,
        content_type="application/json",
        headers=auth(token(service_url(PV))),
    )
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "request-entity-too-large"
