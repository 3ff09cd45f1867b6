"""Each outcome rule of cds.outcomes.rules on hand-made FHIR resources."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cds.outcomes.rules import derive_patient

AS_OF = dt.date(2026, 1, 1)
CUT = dt.date(2027, 3, 1)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **extra}


def contact(day: str, eid: str = "amb") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "class": {"code": "AMB"},
        "period": {"start": day},
    }


def stay(eid: str, start: str, end: str, code: str, **extra: Any) -> list[dict[str, Any]]:
    enc = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"code": "IMP"},
        "period": {"start": start, "end": end},
        "diagnosis": [{"condition": {"reference": f"Condition/{eid}-dx"}, "rank": 1}],
        **extra,
    }
    cond = {
        "resourceType": "Condition",
        "id": f"{eid}-dx",
        "code": {"coding": [{"system": ICD, "code": code}]},
        "encounter": {"reference": f"Encounter/{eid}"},
    }
    return [enc, cond]


def run(pat: dict[str, Any], res: list[dict[str, Any]]):
    by: dict[str, list[dict[str, Any]]] = {}
    for r in res:
        by.setdefault(r["resourceType"], []).append(r)
    return derive_patient(pat, by, AS_OF, CUT)


def test_followed_year_without_events_is_all_zero() -> None:
    out = run(patient(), [contact("2027-01-10")])
    assert out.labels == dict.fromkeys(out.labels, 0)
    assert out.censor_reason == ""


def test_short_follow_up_is_censored_not_zero() -> None:
    out = run(patient(), [contact("2026-06-01")])
    assert all(v is None for v in out.labels.values())
    assert "151 days" in out.censor_reason


def test_event_before_loss_is_kept_the_rest_censored() -> None:
    out = run(patient(), [*stay("e1", "2026-03-01", "2026-03-05", "I50.23"), contact("2026-05-01")])
    assert out.labels["rehospitalization"] == 1
    assert out.labels["cardiology_rehospitalization"] == 1
    assert out.labels["macce"] == 1
    assert out.labels["death"] is None and out.labels["cv_death"] is None


def test_cv_and_non_cv_death_by_cause_of_death() -> None:
    def cause(code: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": "cod",
            "code": {"coding": [{"system": "http://loinc.org", "code": "69453-9"}]},
            "effectiveDateTime": "2026-04-02",
            "valueCodeableConcept": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]
            },
        }

    cv = run(patient(deceasedDateTime="2026-04-02T06:00:00Z"), [cause("I46.1")])
    assert cv.labels == {
        "death": 1,
        "cv_death": 1,
        "rehospitalization": 0,
        "cardiology_rehospitalization": 0,
        "macce": 1,
    }
    assert cv.cv_death_cause == "sudden cardiac death"
    ncv = run(patient(deceasedDateTime="2026-04-02"), [cause("C34.9")])
    assert ncv.labels["death"] == 1 and ncv.labels["cv_death"] == 0 and ncv.labels["macce"] == 0
    presumed = run(patient(deceasedDateTime="2026-04-02"), [])
    assert presumed.labels["cv_death"] == 1  # no recorded cause: presumed cardiovascular


def test_death_after_the_window_is_not_a_death() -> None:
    out = run(patient(deceasedDateTime="2027-01-05"), [])
    assert out.labels["death"] == 0 and out.censor_reason == ""


def test_planned_admissions_are_excluded() -> None:
    pci = {
        "resourceType": "Procedure",
        "id": "pr",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "415070008"}]},
        "encounter": {"reference": "Encounter/e2"},
    }
    res = [
        *stay("e1", "2026-02-01", "2026-02-02", "I25.10", priority={"coding": [{"code": "EL"}]}),
        *stay("e2", "2026-03-01", "2026-03-02", "I25.10"),  # PCI, non-acute diagnosis
        *stay("e3", "2026-04-01", "2026-04-02", "Z51.11"),  # chemotherapy
        pci,
        contact("2027-01-10"),
    ]
    out = run(patient(), res)
    assert out.labels["rehospitalization"] == 0
    assert out.rules["excluded: planned: elective priority"] == 1
    assert out.rules["excluded: planned: always-planned diagnosis"] == 1
    assert out.rules["excluded: planned: potentially planned procedure, non-acute diagnosis"] == 1
    pci["encounter"] = {"reference": "Encounter/e4"}
    acute = run(
        patient(), [*stay("e4", "2026-03-01", "2026-03-02", "I21.4"), pci, contact("2027-01-10")]
    )
    assert acute.labels["rehospitalization"] == 1 and acute.labels["macce"] == 1


def test_transfer_continuation_takes_the_first_stays_diagnosis() -> None:
    res = [
        *stay("e1", "2026-03-01", "2026-03-04", "J18.9"),
        *stay(
            "e2",
            "2026-03-04",
            "2026-03-08",
            "I48.91",
            hospitalization={"admitSource": {"coding": [{"code": "hosp-trans"}]}},
        ),
        contact("2027-01-10"),
    ]
    out = run(patient(), res)
    assert out.labels["rehospitalization"] == 1
    assert out.labels["cardiology_rehospitalization"] == 0
    assert out.rules["merged: transfer continues an earlier stay"] == 1


def test_stroke_condition_counts_for_macce_not_cardiology() -> None:
    res = [*stay("e1", "2026-05-01", "2026-05-09", "I63.9"), contact("2027-01-10")]
    out = run(patient(), res)
    assert out.labels["macce"] == 1 and out.macce_cause == "stroke"
    assert out.labels["cardiology_rehospitalization"] == 0


def test_bad_resources_warn_by_id_and_the_rest_goes_on() -> None:
    res = [
        {"resourceType": "Encounter", "id": "noperiod", "class": {"code": "IMP"}},
        *stay("e1", "2026-05-01", "2026-05-03", "I50.9"),
        contact("2027-01-10"),
    ]
    out = run(patient(deceasedDateTime="last tuesday"), res)
    assert any(w.startswith("Patient/p1: deceasedDateTime") for w in out.warnings)
    assert any(w.startswith("Encounter/noperiod:") for w in out.warnings)
    assert out.labels["rehospitalization"] == 1 and out.labels["death"] == 0
