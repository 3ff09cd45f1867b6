"""The patient page: predictions, charts, overlay, inputs, alerts."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Any

import matplotlib.image as mpimg
from sqlalchemy import select

from cds.db.models import Prediction

from . import factory


def test_patient_page_content(clinician: Any, data: Any) -> None:
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    for text in (
        "All-cause death",
        "Cardiovascular death",
        "MACCE",
        "tier tier-high",
        "LGE fibrosis burden",
        "Clinical measurements",
        "LV ejection fraction",
        "Observation/p-high-lvef",
        "2026-10-02",
        "NT-proBNP",
        "pg/mL",
        "Alert 1: High risk tier",
        "Audit trail",
        "Resolve: reason",
        'type="date"',
        "Snooze until",
        "1.2.3.",
    ):
        assert text in html, text
    # The risk table's latest value, and all three runs in the trend table.
    assert html.count('<th scope="row">2026-11-') == 3


def test_contributions_table_and_waterfall(clinician: Any, data: Any, dbs: Any) -> None:
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "What moved the risk" in html and "Fusion attention weights" in html
    table = html[
        html.index('id="contributions"') : html.index("</table>", html.index('id="contributions"'))
    ]
    assert table.count('<th scope="row">') == 5  # one row per outcome
    pred = dbs.scalars(
        select(Prediction)
        .where(Prediction.patient_id == data["patients"]["p-high"].id)
        .order_by(Prediction.created_at.desc())
    ).first()
    death = pred.contributions["death"]
    # the death row shows the stored parts as signed points and the patient's risk
    row = table[table.index("All-cause death") :].split("</tr>")[0]
    assert f"+{100 * death['numeric']:.1f}<" in row
    assert f"{100 * pred.probabilities['death']:.1f}%" in row
    assert "typical patients 10.0%" in html.lower()
    resp = clinician.get("/inbox/patients/p-high/contributions/death.svg")
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    assert ET.fromstring(resp.data).tag.endswith("svg")
    assert clinician.get("/inbox/patients/p-high/contributions/nope.svg").status_code == 404


def test_prediction_without_contributions_says_so(clinician: Any, data: Any, dbs: Any) -> None:
    for pred in dbs.scalars(select(Prediction)):
        pred.contributions = {}
    dbs.commit()
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "No contributions recorded for this prediction." in html
    assert clinician.get("/inbox/patients/p-high/contributions/death.svg").status_code == 404


def test_charts_are_svg(clinician: Any) -> None:
    for path in ("risk-trend.svg", "modality-weights.svg", "contributions/death.svg"):
        resp = clinician.get(f"/inbox/patients/p-high/{path}")
        assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
        assert "script" not in resp.headers["Content-Security-Policy"]
        assert b"<script" not in resp.data
        root = ET.fromstring(resp.data)
        assert root.tag.endswith("svg")


def test_overlay_png(clinician: Any, data: Any, dbs: Any) -> None:
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    start = html.index("/inbox/patients/p-high/overlay/")
    src = html[start : html.index('"', start)]
    resp = clinician.get(src)
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    img = mpimg.imread(io.BytesIO(resp.data))
    assert img.shape[0] >= 256 and img.shape[2] == 3
    # Another patient's URL cannot serve it.
    other = src.replace("p-high", "p-mod")
    assert clinician.get(other).status_code == 404
    assert clinician.get("/inbox/patients/p-high/overlay/999.png").status_code == 404


def test_no_overlay_message(clinician: Any) -> None:
    html = clinician.get("/inbox/patients/p-mod").get_data(as_text=True)
    assert "No LGE overlay is available" in html


def test_unknown_patient_is_404(clinician: Any) -> None:
    resp = clinician.get("/inbox/patients/nope")
    assert resp.status_code == 404 and b"No such patient" in resp.data
    assert clinician.get("/inbox/patients/nope/risk-trend.svg").status_code == 404


def test_patient_without_predictions(clinician: Any, dbs: Any) -> None:
    factory.patient(dbs, "p-new")
    dbs.commit()
    html = clinician.get("/inbox/patients/p-new").get_data(as_text=True)
    assert "No prediction yet" in html and "No alerts for this patient" in html
    assert clinician.get("/inbox/patients/p-new/risk-trend.svg").status_code == 404
    assert clinician.get("/inbox/patients/p-new/modality-weights.svg").status_code == 404


def test_user_text_is_escaped(clinician: Any, data: Any, dbs: Any) -> None:
    alert = dbs.get(type(data["alerts"]["high"]), data["alerts"]["high"].id)
    alert.message = "<script>alert(1)</script>"
    dbs.commit()
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_thresholds_drawn_when_configured(app: Any, data: Any, db_url: str) -> None:
    import dataclasses

    from cds.app import create_app

    from .conftest import login, make_settings

    base = make_settings(db_url)
    settings = dataclasses.replace(
        base, risk=dataclasses.replace(base.risk, moderate=0.1, high=0.3)
    )
    other = create_app(settings, TESTING=True)
    client = other.test_client()
    login(client, "alice")
    svg = client.get("/inbox/patients/p-high/risk-trend.svg").get_data(as_text=True)
    plain = app.test_client()
    login(plain, "alice")
    assert len(svg) > len(plain.get("/inbox/patients/p-high/risk-trend.svg").data)
    assert "Dashed lines" in client.get("/inbox/patients/p-high").get_data(as_text=True)
    other.extensions["mprtm.engine"].dispose()


def test_one_action_bar_acknowledges_every_open_alert(clinician: Any, dbs: Any, data: Any) -> None:
    from cds.db.models import Alert

    pat = data["patients"]["p-high"]
    second = factory.alert(dbs, pat, reason="rise", probability=0.35)
    dbs.commit()
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "Acknowledge all 2 open alerts" in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None
    ids = [str(data["alerts"]["high"].id), str(second.id)]
    resp = clinician.post(
        "/inbox/alerts/acknowledge",
        data={"alert_id": ids, "csrf_token": token.group(1), "next": "/inbox/patients/p-high"},
    )
    assert resp.status_code in (302, 303)
    dbs.expire_all()
    assert {dbs.get(Alert, int(i)).status for i in ids} == {"acknowledged"}


def test_patient_page_shows_scored_and_checked_times(clinician: Any, dbs: Any, data: Any) -> None:
    """A nightly run that found the inputs unchanged: the page says when it was scored
    and when it was checked."""
    import datetime as dt

    from cds.db.models import Patient

    patient = dbs.scalar(select(Patient).where(Patient.fhir_id == "p-high"))
    latest = dbs.scalars(
        select(Prediction)
        .where(Prediction.patient_id == patient.id)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
    ).first()
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    assert "no new data" not in html
    latest.checked_at = latest.created_at.replace(tzinfo=dt.UTC) + dt.timedelta(days=2, hours=1)
    dbs.commit()
    html = clinician.get("/inbox/patients/p-high").get_data(as_text=True)
    when = f"checked {latest.checked_at:%Y-%m-%d %H:%M} UTC, no new data"
    assert when in html and "scored " in html
