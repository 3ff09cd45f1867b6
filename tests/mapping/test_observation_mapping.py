"""LOINC -> feature, UCUM conversion, window/latest value, plausibility, NYHA."""

from __future__ import annotations

import datetime as dt

import pytest

from cds.mapping import map_record
from tests.mapping.fhir_builders import obs, patient, record

AS_OF = dt.date(2026, 11, 1)


def mapped(*resources: dict, window: int = 365):
    return map_record(record(patient("p1"), resources), as_of=AS_OF, window_days=window)


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "feature", "expected"),
    [
        ("2160-0", 1.0, "mg/dL", "creatinine", 88.42),
        ("14682-9", 97.0, "umol/L", "creatinine", 97.0),
        ("14682-9", 97.0, "µmol/L", "creatinine", 97.0),
        ("718-7", 13.5, "g/dL", "hemoglobin", 135.0),
        ("718-7", 135.0, "g/L", "hemoglobin", 135.0),
        ("718-7", 8.0, "mmol/L", "hemoglobin", 128.88),
        ("30934-4", 250.0, "ng/L", "bnp", 250.0),
        ("30934-4", 250.0, "pg/mL", "bnp", 250.0),
        ("2345-7", 108.0, "mg/dL", "glucose", 5.99508),
        ("3094-0", 20.0, "mg/dL", "urea", 7.14),
        ("29463-7", 185.0, "[lb_av]", "weight", 83.91458845),
        ("10230-1", 0.35, "{fraction}", "lvef", 35.0),
        ("18043-0", 40.0, "%", "lvef", 40.0),
        ("29436-3", 5.5, "cm", "lvdd", 55.0),
        ("8480-6", 120.0, "mmHg", "sbp", 120.0),
        ("6690-2", 7.1, "10^9/L", "wbc", 7.1),
        ("6598-7", 14.0, "ng/L", "tnt", 0.014),
    ],
)
def test_unit_conversion(loinc, value, unit, feature, expected):
    m = mapped(obs("o1", "p1", loinc, value, unit, "2026-10-01"))
    assert m.features[feature].value == pytest.approx(expected, rel=1e-6)
    assert m.model_input.numeric[feature] == pytest.approx(expected, rel=1e-6)
    assert m.features[feature].source == "Observation/o1"
    assert m.features[feature].date == dt.date(2026, 10, 1)
    assert "Observation/o1" in m.basis
    assert not m.warnings


def test_human_unit_string_without_ucum_code_case_insensitive():
    m = mapped(obs("o1", "p1", "2160-0", 1.2, "mg/dl", "2026-10-01", ucum=False))
    assert m.features["creatinine"].value == pytest.approx(106.104)
    assert m.features["creatinine"].original == "1.2 mg/dl"


def test_unknown_unit_dropped_with_warning_naming_resource_and_unit():
    m = mapped(obs("cr-9", "p1", "2160-0", 1.2, "mmol/L", "2026-10-01"))
    assert "creatinine" not in m.features
    assert "creatinine" not in m.model_input.numeric
    assert any("Observation/cr-9" in w and "'mmol/L'" in w for w in m.warnings)


def test_missing_unit_dropped_unless_dimensionless():
    m = mapped(
        obs("o1", "p1", "2160-0", 1.2, None, "2026-10-01"),
        obs("o2", "p1", "6301-6", 1.3, None, "2026-10-01"),
    )
    assert "creatinine" not in m.features
    assert any("Observation/o1" in w and "no unit" in w for w in m.warnings)
    assert m.features["inr"].value == pytest.approx(1.3)


def test_latest_value_within_window_wins_and_future_is_ignored():
    m = mapped(
        obs("old", "p1", "30934-4", 900.0, "pg/mL", "2025-06-01"),
        obs("mid", "p1", "30934-4", 450.0, "pg/mL", "2026-03-01"),
        obs("new", "p1", "30934-4", 300.0, "pg/mL", "2026-10-20T08:00:00+02:00"),
        obs("future", "p1", "30934-4", 100.0, "pg/mL", "2026-11-02"),
    )
    assert m.features["bnp"].source == "Observation/new"
    assert m.features["bnp"].value == 300.0
    assert "Observation/future" not in m.basis
    assert "Observation/old" not in m.basis


def test_value_older_than_window_is_missing():
    m = mapped(obs("old", "p1", "30934-4", 900.0, "pg/mL", "2025-06-01"), window=90)
    assert "bnp" not in m.model_input.numeric


def test_same_day_values_ordered_by_time():
    m = mapped(
        obs("late", "p1", "8867-4", 70.0, "/min", "2026-10-01T18:00:00Z"),
        obs("early", "p1", "8867-4", 90.0, "/min", "2026-10-01T06:00:00Z"),
    )
    assert m.features["heart_rate"].source == "Observation/late"


def test_implausible_value_dropped_with_warning_and_older_plausible_used():
    m = mapped(
        obs("ef-1", "p1", "10230-1", 35.0, "%", "2026-09-01"),
        obs("ef-2", "p1", "10230-1", 99.6, "%", "2026-10-01"),
    )
    assert m.features["lvef"].source == "Observation/ef-1"
    assert m.features["lvef"].value == 35.0
    warning = [w for w in m.warnings if "Observation/ef-2" in w]
    assert warning and "plausible" in warning[0] and "99.6" in warning[0]


@pytest.mark.parametrize("status", ["preliminary", "entered-in-error", "cancelled", "registered"])
def test_non_final_observations_are_ignored(status):
    m = mapped(obs("o1", "p1", "2160-0", 1.0, "mg/dL", "2026-10-01", status=status))
    assert "creatinine" not in m.features


def test_data_absent_and_undated_observations():
    absent = obs("o1", "p1", "2160-0", None, None, "2026-10-01")
    absent["dataAbsentReason"] = {"text": "not done"}
    undated = obs("o2", "p1", "2951-2", 140.0, "mmol/L", "2026-10-01")
    del undated["effectiveDateTime"]
    m = mapped(absent, undated)
    assert "creatinine" not in m.features and "sodium" not in m.features
    assert any("Observation/o2" in w and "no effective date" in w for w in m.warnings)


def test_effective_period_and_issued_dates():
    period = obs("o1", "p1", "2951-2", 139.0, "mmol/L", "x")
    del period["effectiveDateTime"]
    period["effectivePeriod"] = {"start": "2026-09-01", "end": "2026-09-02"}
    issued = obs("o2", "p1", "2823-3", 4.1, "mmol/L", "x")
    del issued["effectiveDateTime"]
    issued["issued"] = "2026-09-03T10:00:00Z"
    m = mapped(period, issued)
    assert m.features["sodium"].date == dt.date(2026, 9, 2)
    assert m.features["potassium"].date == dt.date(2026, 9, 3)


def test_blood_pressure_panel_components():
    panel = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-10-01",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 132, "unit": "mmHg"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 81, "unit": "mm[Hg]"},
            },
        ],
    }
    m = mapped(panel)
    assert (m.features["sbp"].value, m.features["dbp"].value) == (132.0, 81.0)
    assert m.features["sbp"].source == m.features["dbp"].source == "Observation/bp"
    assert m.basis.count("Observation/bp") == 1


def _nyha(oid: str, **value) -> dict:
    res = obs(oid, "p1", "88020-3", None, None, "2026-10-01")
    res.update(value)
    return res


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {
                "valueCodeableConcept": {
                    "coding": [{"system": "http://loinc.org", "code": "LA28406-9"}]
                }
            },
            3,
        ),
        (
            {
                "valueCodeableConcept": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "421704003"}]
                }
            },
            2,
        ),
        ({"valueCodeableConcept": {"text": "NYHA class IV"}}, 4),
        ({"valueInteger": 1}, 1),
        ({"valueString": "Class III"}, 3),
        ({"valueString": "II"}, 2),
    ],
)
def test_nyha_forms(value, expected):
    m = mapped(_nyha("n1", **value))
    assert m.features["nyha_class"].value == expected


def test_nyha_unreadable_value_warns():
    m = mapped(_nyha("n1", valueString="unknown"))
    assert "nyha_class" not in m.features
    assert any("Observation/n1" in w for w in m.warnings)


def test_unrelated_loinc_codes_are_ignored_silently():
    m = mapped(obs("o1", "p1", "8310-5", 37.0, "Cel", "2026-10-01"))
    assert m.features.keys() == {"age", "sex_male"}
    assert not m.warnings
    assert m.basis == ["Patient/p1"]


def test_demographics():
    rec = record(patient("p1", birth="1950-11-02", gender="female"), [])
    m = map_record(rec, as_of=AS_OF)
    assert m.model_input.numeric["age"] == 75.0
    assert m.model_input.numeric["sex_male"] == 0.0
    rec = record(patient("p2", birth="", gender="unknown"), [])
    m = map_record(rec, as_of=AS_OF)
    assert "age" not in m.model_input.numeric and "sex_male" not in m.model_input.numeric
