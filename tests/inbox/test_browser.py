"""The inbox in headless Chromium (Debian ``chromium`` driven by Playwright).

Screenshots go to ``test-artifacts/inbox/``; with ``MPRTM_UPDATE_DOCS_SCREENSHOTS=1``
the inbox and patient screenshots are also written to ``docs/img/`` for the README.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from cds.app import create_app
from cds.db import session_factory
from cds.db.models import Alert, AlertEvent, Patient

from . import factory
from .browser import ARTIFACTS, DOCS_IMG, free_port, serve
from .conftest import make_settings

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live(migrated_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db_path = tmp_path_factory.mktemp("inbox-browser") / "inbox.db"
    shutil.copy(migrated_template, db_path)
    app = create_app(make_settings(f"sqlite:///{db_path}"))
    sessions = session_factory(app.extensions["mprtm.engine"])
    with sessions() as s:
        data = factory.demo_dataset(s)
        factory.more_alerts(s, 9)
        s.commit()
        alert_id = data["alerts"]["high"].id
    with serve(app) as url:
        yield {"url": url, "sessions": sessions, "alert_id": alert_id}
    app.extensions["mprtm.engine"].dispose()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context; fails the test on a console error (e.g. a CSP violation)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    expected = ("the server responded with a status of 40",)  # the 400/403 pages we provoke
    unexpected = [e for e in errors if not e.startswith("Failed to load resource: " + expected[0])]
    assert not unexpected, unexpected


def shot(page: Any, name: str, docs: bool = False) -> None:
    """Save a full-page screenshot as a test artifact (and for the docs when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if docs and os.environ.get("MPRTM_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / f"{name}.png")


def sign_in(page: Any, url: str, username: str) -> None:
    """Log in with the keyboard only: type, Tab to the password, Enter to submit."""
    page.goto(f"{url}/inbox/login")
    page.get_by_label("User name").focus()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(factory.PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/inbox/(\?.*)?$"))


def test_unauthenticated_access_redirects_to_login(page: Any, live: Any) -> None:
    page.goto(f"{live['url']}/inbox/patients/p-high")
    assert "/inbox/login" in page.url
    assert "next=" in page.url
    expect(page.get_by_role("heading", name="Sign in to the alert inbox")).to_be_visible()
    shot(page, "login")


def test_triage_flow_login_filter_open_acknowledge(page: Any, live: Any) -> None:
    url, alert_id = live["url"], live["alert_id"]
    sign_in(page, url, "alice")
    expect(page.get_by_role("heading", name="Alert inbox")).to_be_visible()
    shot(page, "inbox-factory")

    # Filter: high tier only.
    page.get_by_label("Tier").select_option("high")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"tier=high"))
    rows = page.locator("table.alerts tbody tr")
    assert rows.count() >= 1
    for i in range(rows.count()):
        assert rows.nth(i).locator(".tier").inner_text().lower() == "high"
    assert page.locator("table.alerts").get_by_role("link", name="p-low").count() == 0
    shot(page, "inbox-filtered")

    # Open the patient.
    page.locator("table.alerts").get_by_role("link", name="p-high").click()
    page.wait_for_url(re.compile(r"/inbox/patients/p-high"))
    expect(page.get_by_role("heading", name=re.compile("Patient p-high"))).to_be_visible()
    for name in (
        "Current 1-year risk",
        "What moved the risk",
        "Fusion attention weights",
        "Risk trend across runs",
        "Fibrosis on LGE cardiac MRI",
        "Key inputs",
        "Audit trail",
    ):
        expect(page.get_by_role("heading", name=name)).to_be_visible()
    for img in page.locator("main img").all():  # charts and overlay really loaded
        assert img.evaluate("el => el.complete && el.naturalWidth > 0"), img.get_attribute("src")
    shot(page, "patient-factory")

    # Acknowledge the alert.
    card = page.locator(f"#alert-{alert_id}")
    card.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(r"/inbox/patients/p-high"))
    expect(page.get_by_role("status").filter(has_text="acknowledged")).to_be_visible()
    assert "acknowledged" in page.locator(f"#alert-{alert_id} .status").inner_text().lower()
    audit = page.locator("#audit tbody tr").first
    assert "alice" in audit.inner_text()
    assert "acknowledged" in audit.inner_text()
    shot(page, "patient-acknowledged")

    # The change persisted.
    with live["sessions"]() as s:
        alert = s.get(Alert, alert_id)
        assert alert is not None and alert.status == "acknowledged"
        events = s.scalars(
            select(AlertEvent).where(
                AlertEvent.alert_id == alert_id, AlertEvent.action == "acknowledge"
            )
        ).all()
        assert [e.actor for e in events] == ["alice"]


def test_bulk_acknowledge_with_keyboard_and_checkboxes(page: Any, live: Any) -> None:
    sign_in(page, live["url"], "alice")
    page.get_by_label("Tier").select_option("moderate")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"tier=moderate"))
    page.get_by_label("Select all alerts on this page").check()
    n = page.locator('input[name="alert_id"]:checked').count()
    assert n >= 2
    page.get_by_role("button", name="Acknowledge selected").click()
    expect(page.get_by_role("status").filter(has_text=f"Acknowledged {n} alerts")).to_be_visible()
    with live["sessions"]() as s:
        moderate = s.scalars(select(Alert).join(Patient).where(Alert.tier == "moderate")).all()
        assert all(a.status == "acknowledged" for a in moderate)


def test_clinician_cannot_open_admin_pages(page: Any, live: Any) -> None:
    sign_in(page, live["url"], "alice")
    assert page.get_by_role("link", name="Batch runs").count() == 0
    for path in ("/inbox/admin/runs", "/inbox/admin/model", "/inbox/admin/feedback"):
        response = page.goto(live["url"] + path)
        assert response is not None and response.status == 403, path
    expect(page.get_by_role("heading", name=re.compile("403"))).to_be_visible()
    shot(page, "admin-forbidden")


def test_admin_pages(page: Any, live: Any) -> None:
    sign_in(page, live["url"], "root-admin")
    page.get_by_role("link", name="Batch runs").click()
    expect(page.get_by_role("heading", name="Batch runs")).to_be_visible()
    shot(page, "admin-runs")
    page.locator("table").get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Failures")).to_be_visible()
    expect(page.get_by_text("FhirError").first).to_be_visible()
    page.get_by_role("link", name="Card feedback").click()
    expect(page.get_by_role("heading", name="Override reasons")).to_be_visible()
    shot(page, "admin-feedback")
    page.get_by_role("link", name="Model", exact=True).click()
    assert page.locator(".model-card table").count() == 1  # the card's Markdown table
    shot(page, "admin-model")


def test_form_without_csrf_token_is_refused(page: Any, live: Any) -> None:
    sign_in(page, live["url"], "alice")
    page.goto(f"{live['url']}/inbox/patients/p-mod")
    form = page.locator("form.inline").filter(has_text="Snooze until").first
    form.evaluate("f => f.querySelector('input[name=csrf_token]').remove()")
    date_input = form.get_by_label("Snooze until")
    date_input.fill(date_input.get_attribute("min") or "")
    with page.expect_response(re.compile(r"/snooze$")) as info:
        form.get_by_role("button", name="Snooze").click()
    assert info.value.status == 400
    expect(page.get_by_text("security token is missing")).to_be_visible()
    with live["sessions"]() as s:
        pat = s.scalar(select(Patient).where(Patient.fhir_id == "p-mod"))
        assert pat is not None
        alerts = s.scalars(select(Alert).where(Alert.patient_id == pat.id)).all()
        assert all(a.status != "snoozed" for a in alerts)


def test_ehr_launch_in_chromium(
    page: Any, migrated_template: Path, tmp_path: Path, smart_server: Any
) -> None:
    """SMART EHR launch end to end: the EHR opens the card's link with launch and iss."""
    db_path = tmp_path / "smart.db"
    shutil.copy(migrated_template, db_path)
    port = free_port()
    inbox_url = f"http://127.0.0.1:{port}"
    smart_server.redirect_uri = f"{inbox_url}/inbox/callback"
    app = create_app(
        make_settings(
            f"sqlite:///{db_path}",
            public_url=inbox_url,
            smart_client_id=smart_server.client_id,
            smart_issuers=[smart_server.fhir_base],
        )
    )
    sessions = session_factory(app.extensions["mprtm.engine"])
    with sessions() as s:
        alert_id = factory.demo_dataset(s)["alerts"]["high"].id
        s.commit()
    launch = smart_server.new_launch("p-high")
    with serve(app, port):
        page.goto(f"{inbox_url}/inbox/patients/p-high?launch={launch}&iss={smart_server.fhir_base}")
        page.wait_for_url(f"{inbox_url}/inbox/patients/p-high")
        expect(page.get_by_text("smart:Practitioner/dr-test")).to_be_visible()
        assert page.get_by_role("link", name="Inbox").count() == 0  # bound to one patient
        page.locator(f"#alert-{alert_id}").get_by_role("button", name="Acknowledge").click()
        expect(page.get_by_role("status").filter(has_text="acknowledged")).to_be_visible()
        expect(
            page.locator("#audit tbody tr").first.get_by_text("smart:Practitioner/dr-test")
        ).to_be_visible()
        shot(page, "smart-launch")
        response = page.goto(f"{inbox_url}/inbox/patients/p-mod")
        assert response is not None and response.status == 403
        page.wait_for_load_state("networkidle")  # the favicon too, before the server stops
        page.goto("about:blank")
    with sessions() as s:
        assert s.get(Alert, alert_id).status == "acknowledged"
    app.extensions["mprtm.engine"].dispose()


def test_keyboard_only_skip_link_and_acknowledge(page: Any, live: Any) -> None:
    sign_in(page, live["url"], "alice")
    page.goto(f"{live['url']}/inbox/patients/p-low")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(80):  # Tab through the page to the first Acknowledge button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Acknowledge":
            break
    else:
        raise AssertionError("no Acknowledge button reachable with Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="acknowledged")).to_be_visible()
    with live["sessions"]() as s:
        pat = s.scalar(select(Patient).where(Patient.fhir_id == "p-low"))
        assert pat is not None
        assert [a.status for a in pat.alerts] == ["acknowledged"]
