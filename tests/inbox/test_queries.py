"""Inbox filters, sorting, pagination and counts."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from cds.inbox.queries import AlertQuery, list_alerts, parse_query

from . import factory


def patients_on_page(client: Any, query: str) -> list[str]:
    html = client.get(f"/inbox/?{query}").get_data(as_text=True)
    return re.findall(r'<th scope="row"><a href="/inbox/patients/([^"#]+)', html)


def test_default_shows_open_alerts_by_tier_then_risk(clinician: Any) -> None:
    assert patients_on_page(clinician, "") == ["p-high", "p-mod", "p-low"]


def test_one_row_per_patient_with_every_reason_and_ties_by_rise(
    clinician: Any, dbs: Any, data: Any
) -> None:
    """Two open alerts of one patient make one row listing both; two patients of the same
    tier and risk are ordered by the rise of their risk since the run before."""
    high = data["patients"]["p-high"]
    factory.alert(dbs, high, reason="rise", probability=0.35)
    b = factory.patient(dbs, "p-tie-b")  # created first: the id order alone would put it last
    a = factory.patient(dbs, "p-tie-a")
    for pat, before in ((a, 0.30), (b, 0.10)):  # b rose more
        factory.prediction(dbs, pat, as_of=factory.NOW - dt.timedelta(days=1), risk=before)
        pred = factory.prediction(dbs, pat, as_of=factory.NOW, risk=0.40 / 1.1)
        factory.alert(dbs, pat, tier="moderate", probability=0.2, pred=pred)
    dbs.commit()
    rows = patients_on_page(clinician, "")
    assert rows.count("p-high") == 1
    assert rows.index("p-tie-b") < rows.index("p-tie-a")
    html = clinician.get("/inbox/").get_data(as_text=True)
    row = html.split('id="patient-row-p-high"')[1].split("</tr>")[0]
    assert "High risk tier" in row and "Risk rose since last run" in row
    page = list_alerts(dbs, AlertQuery(), None)
    tie_b = next(r for r in page.rows if r.patient.fhir_id == "p-tie-b")
    assert tie_b.rise is not None and tie_b.rise > 0


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status=resolved", ["p-old"]),
        ("status=all", ["p-old", "p-high", "p-mod", "p-low"]),
        ("status=new&tier=moderate", ["p-mod"]),
        ("tier=high&status=all", ["p-old", "p-high"]),
        ("reason=fibrosis", ["p-low"]),
        ("cohort=telemonitoring", ["p-low"]),
        ("cohort=telemonitoring&status=all", ["p-old", "p-low"]),
        ("from=2026-11-19&to=2026-11-19", ["p-mod"]),
        ("from=2026-11-17", ["p-high", "p-mod", "p-low"]),
        ("to=2026-11-17&status=all", ["p-old", "p-low"]),
        ("patient=p-m", ["p-mod"]),
        ("patient=MRN-p-l", ["p-low"]),
        ("patient=%25", []),  # LIKE wildcards are literal
        ("sort=probability&dir=desc&status=all", ["p-old", "p-high", "p-mod", "p-low"]),
        ("sort=probability&dir=asc", ["p-low", "p-mod", "p-high"]),
        ("sort=tier&dir=asc", ["p-low", "p-mod", "p-high"]),
        ("sort=patient&dir=asc", ["p-high", "p-low", "p-mod"]),
        ("sort=created", ["p-high", "p-mod", "p-low"]),
    ],
)
def test_filters_and_sorting(clinician: Any, query: str, expected: list[str]) -> None:
    assert patients_on_page(clinician, query) == expected


def test_assigned_to_me(clinician: Any, data: Any, dbs: Any) -> None:
    alert = dbs.get(type(data["alerts"]["mod"]), data["alerts"]["mod"].id)
    alert.assignee_id = data["users"]["alice"].id
    dbs.commit()
    assert patients_on_page(clinician, "mine=1") == ["p-mod"]
    html = clinician.get("/inbox/?mine=1").get_data(as_text=True)
    assert "assigned to you" in html


def test_counts(dbs: Any, data: Any) -> None:
    page = list_alerts(dbs, AlertQuery(), None)
    assert page.total == 3
    assert page.status_counts == {
        "new": 3,
        "acknowledged": 0,
        "snoozed": 0,
        "resolved": 1,
        "open": 3,
        "all": 4,
    }
    assert page.tier_counts == {"high": 1, "moderate": 1, "low": 1}
    tele = list_alerts(dbs, AlertQuery(cohort="telemonitoring", status="resolved"), None)
    assert tele.total == 1
    assert tele.status_counts["new"] == 1 and tele.status_counts["resolved"] == 1


def test_pagination(clinician: Any, dbs: Any) -> None:
    factory.more_alerts(dbs, 27)
    dbs.commit()
    first = patients_on_page(clinician, "per_page=10")
    second = patients_on_page(clinician, "per_page=10&page=2")
    last = patients_on_page(clinician, "per_page=10&page=3")
    beyond = patients_on_page(clinician, "per_page=10&page=99")  # clamped to the last page
    assert len(first) == len(second) == 10 and len(last) == 10
    assert beyond == last
    assert not set(first) & set(second)
    html = clinician.get("/inbox/?per_page=10&page=2").get_data(as_text=True)
    assert "30 patients · 30 alerts" in html
    assert 'rel="next"' in html and 'rel="prev"' in html
    assert 'aria-current="page">2<' in html


def test_bad_filter_values_fall_back_and_are_reported() -> None:
    q = parse_query(
        {
            "status": "bogus",
            "tier": "extreme",
            "from": "yesterday",
            "page": "x",
            "per_page": "7",
            "sort": "name;drop",
            "dir": "sideways",
        }
    )
    assert (q.status, q.tier, q.date_from, q.page, q.per_page, q.sort, q.direction) == (
        "open",
        "",
        None,
        1,
        25,
        "triage",
        "desc",
    )
    assert len(q.problems) == 5


def test_problems_shown_on_page(clinician: Any) -> None:
    html = clinician.get("/inbox/?from=not-a-date").get_data(as_text=True)
    assert "from: not a date" in html


def test_query_args_round_trip() -> None:
    q = AlertQuery(
        status="all",
        tier="high",
        mine=True,
        date_from=dt.date(2026, 1, 2),
        sort="tier",
        direction="asc",
        page=3,
    )
    assert parse_query(q.args()) == q
    assert q.args(page=1)["page"] == "1"


def test_sortable_headers_announce_order(clinician: Any) -> None:
    html = clinician.get("/inbox/?sort=probability&dir=asc").get_data(as_text=True)
    assert 'aria-sort="ascending"' in html
