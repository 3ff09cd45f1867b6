"""SMART App Launch (EHR launch) against the test authorization server in smart_server.py."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds.app import create_app
from cds.db.models import Alert, AlertEvent

from .browser import serve
from .conftest import make_settings, token_of
from .smart_server import SmartTestServer

PUBLIC = "http://inbox.test"
CLIENT_ID = "mprtm-inbox"


@pytest.fixture
def smart() -> Iterator[SmartTestServer]:
    server = SmartTestServer(client_id=CLIENT_ID, redirect_uri=f"{PUBLIC}/inbox/callback")
    with serve(server.app()) as url:
        server.base_url = url
        yield server


@pytest.fixture
def smart_app(db_url: str, data: Any, smart: SmartTestServer) -> Iterator[Flask]:
    settings = make_settings(
        db_url, public_url=PUBLIC, smart_client_id=CLIENT_ID, smart_issuers=[smart.fhir_base + "/"]
    )
    app = create_app(settings, TESTING=True)
    yield app
    app.extensions["mprtm.engine"].dispose()


def launch(
    client: FlaskClient,
    smart: SmartTestServer,
    patient: str = "p-high",
    launch_id: str | None = None,
) -> tuple[Any, str]:
    """Run the launch as a browser would; returns (callback response, callback path)."""
    launch_id = launch_id or smart.new_launch(patient)
    resp = client.get("/inbox/launch", query_string={"launch": launch_id, "iss": smart.fhir_base})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    authorize = resp.headers["Location"]
    assert authorize.startswith(f"{smart.base_url}/auth/authorize?")
    back = httpx.get(authorize, follow_redirects=False)
    assert back.status_code == 302
    callback = back.headers["location"]
    assert callback.startswith(f"{PUBLIC}/inbox/callback?")
    path = callback.removeprefix(PUBLIC)
    return client.get(path), path


def test_ehr_launch_binds_the_session_to_the_patient(
    smart_app: Flask, smart: SmartTestServer, data: Any, dbs: Any
) -> None:
    client = smart_app.test_client()
    resp, _ = launch(client, smart)
    assert resp.status_code == 302 and resp.headers["Location"] == "/inbox/patients/p-high"

    auth = smart.authorize_requests[-1]
    assert auth["response_type"] == "code" and auth["client_id"] == CLIENT_ID
    assert auth["aud"] == smart.fhir_base and auth["code_challenge_method"] == "S256"
    assert auth["scope"] == "launch openid fhirUser"
    token = smart.token_requests[-1]
    digest = hashlib.sha256(token["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == auth["code_challenge"]
    assert 43 <= len(token["code_verifier"]) <= 128

    page = client.get("/inbox/patients/p-high")
    assert page.status_code == 200
    assert b"smart:Practitioner/dr-test" in page.data
    # Bound to that one patient: no inbox, no other patient, no admin.
    assert client.get("/inbox/").status_code == 403
    assert client.get("/inbox/patients/p-mod").status_code == 403
    assert client.get("/inbox/patients/p-mod/risk-trend.svg").status_code == 403
    assert client.get("/inbox/admin/runs").status_code == 403
    other_alert = data["alerts"]["mod"].id
    csrf = token_of(client, "/inbox/patients/p-high")
    assert (
        client.post(
            f"/inbox/alerts/{other_alert}/acknowledge", data={"csrf_token": csrf}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/inbox/alerts/acknowledge", data={"csrf_token": csrf, "alert_id": str(other_alert)}
        ).status_code
        == 403
    )

    # Acting on the launched patient's alert is audited under the EHR user.
    alert_id = data["alerts"]["high"].id
    ack = client.post(f"/inbox/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
    assert ack.status_code == 303
    dbs.expire_all()
    assert dbs.get(Alert, alert_id).status == "acknowledged"
    event = dbs.scalars(
        select(AlertEvent).where(
            AlertEvent.alert_id == alert_id, AlertEvent.action == "acknowledge"
        )
    ).one()
    assert (event.actor, event.user_id) == ("smart:Practitioner/dr-test", None)
    assert (
        client.post(
            f"/inbox/alerts/{alert_id}/assign", data={"csrf_token": csrf, "assignee": "me"}
        ).status_code
        == 400
    )


def test_patient_link_with_launch_parameters_starts_the_launch(
    smart_app: Flask, smart: SmartTestServer
) -> None:
    launch_id = smart.new_launch("p-high")
    resp = smart_app.test_client().get(
        "/inbox/patients/p-high", query_string={"launch": launch_id, "iss": smart.fhir_base}
    )
    assert resp.status_code == 302
    target = urlsplit(resp.headers["Location"])
    assert target.path == "/inbox/launch"
    assert parse_qs(target.query) == {"launch": [launch_id], "iss": [smart.fhir_base]}


def test_state_cannot_be_replayed(smart_app: Flask, smart: SmartTestServer) -> None:
    client = smart_app.test_client()
    first, path = launch(client, smart)
    assert first.status_code == 302
    replay = client.get(path)
    assert replay.status_code == 400 and b"unknown or reused state" in replay.data
    assert len(smart.token_requests) == 1


def test_state_from_another_browser_is_refused(smart_app: Flask, smart: SmartTestServer) -> None:
    victim = smart_app.test_client()
    launch_id = smart.new_launch("p-high")
    resp = victim.get("/inbox/launch", query_string={"launch": launch_id, "iss": smart.fhir_base})
    callback = httpx.get(resp.headers["Location"], follow_redirects=False).headers["location"]
    attacker = smart_app.test_client()
    assert attacker.get(callback.removeprefix(PUBLIC)).status_code == 400
    assert smart.token_requests == []


def test_unlisted_issuer_is_refused_without_contacting_it(
    smart_app: Flask, smart: SmartTestServer
) -> None:
    resp = smart_app.test_client().get(
        "/inbox/launch", query_string={"launch": "x", "iss": "https://evil.example/fhir"}
    )
    assert resp.status_code == 403
    assert b"not in server.smart_issuers" in resp.data
    assert smart.authorize_requests == []


def test_unknown_launch_is_denied_by_the_ehr(smart_app: Flask, smart: SmartTestServer) -> None:
    resp, _ = launch(smart_app.test_client(), smart, launch_id="never-issued")
    assert resp.status_code == 403 and b"access_denied" in resp.data


def test_missing_parameters_and_configuration(db_url: str, data: Any) -> None:
    app = create_app(make_settings(db_url), TESTING=True)
    client = app.test_client()
    assert client.get("/inbox/launch").status_code == 400
    resp = client.get("/inbox/launch", query_string={"launch": "a", "iss": "https://x/fhir"})
    assert resp.status_code == 503 and b"smart_client_id" in resp.data
    assert client.get("/inbox/callback").status_code == 400
    assert client.get("/inbox/callback?code=a&state=b").status_code == 400
    app.extensions["mprtm.engine"].dispose()


def test_unreachable_issuer(db_url: str, data: Any) -> None:
    app = create_app(
        make_settings(db_url, smart_client_id="c", smart_issuers=["http://127.0.0.1:9/fhir"]),
        TESTING=True,
    )
    resp = app.test_client().get(
        "/inbox/launch", query_string={"launch": "a", "iss": "http://127.0.0.1:9/fhir"}
    )
    assert resp.status_code == 502 and b"cannot reach" in resp.data
    app.extensions["mprtm.engine"].dispose()


def test_forged_id_token_is_rejected(smart_app: Flask, smart: SmartTestServer) -> None:
    forger = SmartTestServer(client_id=CLIENT_ID, redirect_uri=smart.redirect_uri)
    forger.base_url = smart.base_url
    smart.id_token = forger.id_token  # type: ignore[method-assign]  # signed by another key
    resp, _ = launch(smart_app.test_client(), smart)
    assert resp.status_code == 502 and b"id_token rejected" in resp.data


def test_demo_launch_goes_through_the_demo_login(db_url: str, data: Any) -> None:
    app = create_app(make_settings(db_url, demo_login=True), TESTING=True)
    client = app.test_client()
    resp = client.get("/inbox/launch?patient=p-high")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/inbox/login?next=/inbox/patients/p-high"
    direct = client.get("/inbox/patients/p-high")  # the card's smart link itself
    assert direct.headers["Location"] == "/inbox/login?next=/inbox/patients/p-high"
    app.extensions["mprtm.engine"].dispose()
