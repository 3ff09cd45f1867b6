"""The inbox in headless Chromium on data from a real batch run (not the test factory).

A synthetic cohort is scored twice (a week apart) by the real batch with a tiny trained
model; the inbox then shows what the batch stored.  The patient page must show the key
inputs grouped, with values, units and dates, and no placeholder rows.  With
``MPRTM_UPDATE_DOCS_SCREENSHOTS=1`` the inbox and patient screenshots are written to
``docs/img/`` for the README.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from cds.app import create_app
from cds.batch.runner import BatchRunner, RunOptions
from cds.db import session_factory
from cds.db.models import Alert, ImageFeatureCache, Patient, Prediction
from cds.scoring import StoredInputs
from cds.users import add_user
from tests.batch.conftest import (  # noqa: F401  (session fixtures used here)
    AS_OF,
    batch_settings,
    checkpoint,
    cohort_dir,
)

from . import factory
from .test_browser import page, shot, sign_in  # noqa: F401  (the page fixture)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def batch_live(
    tmp_path_factory: pytest.TempPathFactory,
    cohort_dir: Path,  # noqa: F811  (the fixture imported above)
    checkpoint: Path,  # noqa: F811
) -> Iterator[dict[str, Any]]:
    from .browser import serve

    tmp = tmp_path_factory.mktemp("inbox-batch")
    # two scored nights (a trend); whether a night may skip unchanged patients is
    # tests/batch/test_batch_incremental.py's subject
    s = batch_settings(
        tmp, cohort_dir, checkpoint, alerts__fibrosis_burden=0.0, batch__incremental=False
    )
    with BatchRunner(s) as runner:
        for as_of in (AS_OF - dt.timedelta(days=7), AS_OF):
            runner.run(RunOptions(as_of=as_of, run_date=as_of.date(), progress=False))
    s = dataclasses.replace(
        s, server=dataclasses.replace(s.server, secret_key="test-secret-0123456789abcdef")
    )
    app = create_app(s)
    sessions = session_factory(app.extensions["mprtm.engine"])
    with sessions() as db:
        add_user(db, "alice", "clinician", factory.PASSWORD)
        add_user(db, "root", "admin", factory.PASSWORD)
        db.commit()
        # a patient whose newest prediction used a usable LGE series with an overlay
        with_image = db.execute(
            select(Patient, Prediction)
            .join(Prediction, Prediction.patient_id == Patient.id)
            .join(
                ImageFeatureCache,
                ImageFeatureCache.series_instance_uid == Prediction.lge_series_uid,
            )
            .where(ImageFeatureCache.overlay_png.is_not(None), Prediction.as_of == AS_OF)
            .limit(1)
        ).first()
        assert with_image is not None, "the batch cached an overlay for some patient"
        patient, pred = with_image
        n_alerts = db.scalar(select(func.count(Alert.id)))
        info = {
            "fhir_id": patient.fhir_id,
            "mrn": patient.identifier,
            "inputs": StoredInputs.from_json(pred.inputs),
            "n_alerts": n_alerts,
        }
    with serve(app) as url:
        yield {"url": url, **info}
    app.extensions["mprtm.engine"].dispose()


def test_inbox_and_patient_page_from_a_real_batch_run(
    page: Any,  # noqa: F811  (the fixture imported above)
    batch_live: Any,
) -> None:
    url = batch_live["url"]
    assert batch_live["n_alerts"] > 0 and batch_live["mrn"]
    sign_in(page, url, "alice")
    rows = page.locator("table.alerts tbody tr")
    assert rows.count() >= 1
    ids = [r.get_attribute("id") for r in rows.all()]
    assert len(ids) == len(set(ids))  # one row per patient
    shot(page, "inbox", docs=True)

    # search by the MRN the batch stored
    page.get_by_label("Patient (MRN)").fill(batch_live["mrn"])
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"patient="))
    page.goto(f"{url}/inbox/patients/{batch_live['fhir_id']}")
    expect(page.get_by_role("heading", name="Key inputs")).to_be_visible()

    table = page.locator("table.inputs")
    for group in ("Demographics", "Vital signs", "Laboratory results", "Echocardiography"):
        expect(table.get_by_role("rowheader", name=group, exact=True)).to_be_visible()
    stored = batch_live["inputs"]
    checked = 0
    for name, unit in (("nt_probnp", "pg/mL"), ("lvef", "%"), ("creatinine", "umol/L")):
        item = stored.get(name)
        if item is None:
            continue
        row = table.locator(f'tr[data-input="{name}"]')
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == unit, (name, cells)
        assert cells[2] == item.date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", cells[2])
        assert cells[3] == item.source and cells[3].startswith("Observation/")
        assert float(cells[0]) == pytest.approx(item.value, rel=1e-3)
        checked += 1
    assert checked >= 2, "the synthetic cohort has NT-proBNP, LVEF and creatinine"
    lge = table.locator('tr[data-input="lge_series"]')
    expect(lge).to_have_count(1)
    assert lge.locator("td").all_inner_texts()[1] == "slices"
    text = table.inner_text()
    for junk in ("features", "lge series", "['", "{'"):  # the placeholder rows of old
        assert junk not in text, junk
    for img in page.locator("main img").all():  # charts and overlay really loaded
        assert img.evaluate("el => el.complete && el.naturalWidth > 0"), img.get_attribute("src")
    shot(page, "patient", docs=True)


def test_admin_pages_of_the_real_runs_fit_the_screen(
    page: Any,  # noqa: F811  (the fixture imported above)
    batch_live: Any,
) -> None:
    """The runs table and a run page of two real runs fit 1366 px without scrolling."""
    url = batch_live["url"]
    sign_in(page, url, "root")
    page.goto(f"{url}/inbox/admin/runs")
    expect(page.locator("table tbody tr")).to_have_count(2)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 1366, width
    shot(page, "runs")
    page.get_by_role("link", name=re.compile(r"^Run \d+$")).first.click()
    expect(page.get_by_role("heading", name=re.compile("Stage timings|Timings"))).to_be_visible()
    shot(page, "run")
