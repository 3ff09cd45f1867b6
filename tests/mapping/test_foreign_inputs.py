"""Resources we did not write: the FHIR R4 spec's examples and another generator's bundle."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cds.mapping import map_record
from connectors.fhir.ndjson import NdjsonFolderSource

SPEC = Path(__file__).parent / "spec_examples"
PAT = "urn:uuid:7c3c5b39-5a8e-4c4b-9d9e-0b0e4a1e2f11"
PID = "7c3c5b39-5a8e-4c4b-9d9e-0b0e4a1e2f11"


@pytest.fixture(scope="module")
def spec_source():
    src = NdjsonFolderSource(SPEC)
    yield src
    src.close()


def test_every_spec_example_patient_maps(spec_source):
    ids = spec_source.cohort_patient_ids("all")
    assert len(ids) == 20
    for pid in ids:
        rec = spec_source.patient_record(pid)
        m = map_record(rec, as_of=dt.date(2022, 1, 1), window_days=365 * 40)
        assert m.patient_id == pid
        assert m.basis[0] == f"Patient/{pid}"


def test_spec_vital_sign_examples_give_expected_values(spec_source):
    rec = spec_source.patient_record("example")
    m = map_record(rec, as_of=dt.date(2022, 1, 1), window_days=365 * 40)
    f = m.features
    # observation-example-bloodpressure: components 107/60 mm[Hg]
    assert (f["sbp"].value, f["dbp"].value) == (107.0, 60.0)
    # blood-pressure-dar (same day, diastolic absent) ties with blood-pressure for sbp
    assert f["sbp"].source in ("Observation/blood-pressure", "Observation/blood-pressure-dar")
    assert f["dbp"].source == "Observation/blood-pressure"
    # observation-example-bmi: 16.2 kg/m2; observation-example-heart-rate: 44 /min
    assert f["bmi"].value == pytest.approx(16.2)
    assert f["heart_rate"].value == 44.0
    # observation-example (body weight): 185 [lb_av] -> kg
    assert f["weight"].value == pytest.approx(185 * 0.45359237)
    # unrelated codes (temperature, respiratory rate, SpO2, head circumference ...) ignored
    numeric = {k for k in m.model_input.numeric if not k.startswith(("cond_", "med_"))}
    assert numeric == {"age", "sex_male", "sbp", "dbp", "bmi", "heart_rate", "weight"}


def test_spec_lab_examples_convert_units(spec_source):
    m = map_record(
        spec_source.patient_record("f001"), as_of=dt.date(2022, 1, 1), window_days=365 * 40
    )
    # observation-example-f005-hemoglobin: 7.2 g/dL -> 72 g/L
    assert m.features["hemoglobin"].value == pytest.approx(72.0)
    assert m.features["hemoglobin"].source == "Observation/f005"


def test_spec_medication_examples(spec_source):
    m = map_record(spec_source.patient_record("pat1"), as_of=dt.date(2022, 1, 1))
    # medicationrequest0331: contained Medication "Warfarin Sodium", active
    assert m.model_input.numeric["med_anticoagulant"] == 1.0
    assert m.features["med_anticoagulant"].source == "MedicationRequest/medrx0331"
    # medicationstatementexample5 is entered-in-error; completed requests are not in use
    assert "MedicationStatement/example005" not in m.basis
    assert "MedicationRequest/medrx0301" not in m.basis  # completed oxycodone
    assert sum(v for k, v in m.model_input.numeric.items() if k.startswith("med_")) == 1.0


def _foreign_bundle() -> dict:
    """A transaction bundle in the style of another generator: urn:uuid references, many
    resource types and codes the model does not use."""

    def entry(res: dict) -> dict:
        return {"fullUrl": f"urn:uuid:{res['id']}", "resource": res}

    subj = {"reference": PAT}
    enc = {"reference": "urn:uuid:enc-1"}

    def loinc_obs(oid, code, value=None, unit=None, **extra):
        res = {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": subj,
            "encounter": enc,
            "effectiveDateTime": "2026-10-01T09:30:00-04:00",
            "issued": "2026-10-01T09:30:00.123-04:00",
        }
        if value is not None:
            res["valueQuantity"] = {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            }
        res.update(extra)
        return res

    resources = [
        {
            "resourceType": "Patient",
            "id": PID,
            "gender": "female",
            "birthDate": "1948-02-29",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                    "valueCode": "F",
                }
            ],
            "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": PID}],
        },
        {"resourceType": "Organization", "id": "org-1", "name": "General Hospital"},
        {"resourceType": "Practitioner", "id": "prac-1", "active": True},
        {
            "resourceType": "Encounter",
            "id": "enc-1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subj,
            "period": {"start": "2026-10-01T09:00:00-04:00", "end": "2026-10-01T10:00:00-04:00"},
        },
        loinc_obs("o-temp", "8310-5", 37.1, "Cel"),
        loinc_obs("o-pain", "72514-3", 3, "{score}"),
        loinc_obs(
            "o-smoke",
            "72166-2",
            valueCodeableConcept={
                "coding": [{"system": "http://snomed.info/sct", "code": "266919005"}]
            },
        ),
        loinc_obs("o-creat", "2160-0", 1.4, "mg/dL"),
        loinc_obs("o-hba1c", "4548-4", 6.1, "%"),
        loinc_obs("o-string", "2951-2", valueString="hemolysed"),
        {  # no code: does not parse as R4 -> skipped with a warning naming it
            "resourceType": "Observation",
            "id": "o-broken",
            "status": "final",
            "subject": subj,
        },
        {
            "resourceType": "Condition",
            "id": "c-sinus",
            "clinicalStatus": {"coding": [{"code": "resolved"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "444814009"}]},
            "subject": subj,
        },
        {
            "resourceType": "Condition",
            "id": "c-htn",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "subject": subj,
            "onsetDateTime": "2001-05-01T00:00:00-04:00",
        },
        {
            "resourceType": "MedicationRequest",
            "id": "mr-amox",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": "308182",
                        "display": "Amoxicillin 250 MG Oral Capsule",
                    }
                ]
            },
            "subject": subj,
            "authoredOn": "2026-09-01T00:00:00-04:00",
        },
        {
            "resourceType": "Immunization",
            "id": "imm-1",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": subj,
            "occurrenceDateTime": "2026-10-01T09:30:00-04:00",
        },
        {"resourceType": "Procedure", "id": "proc-1", "status": "completed", "subject": subj},
        {
            "resourceType": "CarePlan",
            "id": "cp-1",
            "status": "active",
            "intent": "order",
            "subject": subj,
        },
        {"resourceType": "AllergyIntolerance", "id": "al-1", "patient": subj},
        {"resourceType": "Claim", "id": "claim-1", "status": "active", "patient": subj},
        {"resourceType": "ExplanationOfBenefit", "id": "eob-1", "patient": subj},
        {"resourceType": "Provenance", "id": "prov-1", "target": [subj]},
        {"resourceType": "Device", "id": "dev-1", "patient": subj},
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry(r) for r in resources]}


def bundle_to_ndjson(bundle: dict, folder: Path) -> Path:
    by_type: dict[str, list[str]] = {}
    for e in bundle["entry"]:
        res = e["resource"]
        by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
    folder.mkdir(parents=True, exist_ok=True)
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def test_foreign_generator_bundle_maps_and_ignores_unrelated(tmp_path):
    folder = bundle_to_ndjson(_foreign_bundle(), tmp_path / "fhir")
    with NdjsonFolderSource(folder) as src:
        assert src.cohort_patient_ids("all") == [PID]
        rec = src.patient_record(PID)
    m = map_record(rec, as_of=dt.date(2026, 11, 1))
    n = m.model_input.numeric
    assert n["creatinine"] == pytest.approx(1.4 * 88.42)
    assert n["hba1c"] == pytest.approx(6.1)
    assert n["age"] == 78.0 and n["sex_male"] == 0.0
    assert n["cond_hypertension"] == 1.0
    assert sum(v for k, v in n.items() if k.startswith("med_")) == 0.0
    assert "Amoxicillin" in (m.model_input.text or "")
    assert set(m.basis) == {
        f"Patient/{PID}",
        "Observation/o-creat",
        "Observation/o-hba1c",
        "Condition/c-htn",
        "MedicationRequest/mr-amox",
    }
    assert any("Observation/o-broken" in w and "does not parse" in w for w in m.warnings)
    assert any("Observation/o-string" in w for w in m.warnings)
    assert not any(x in w for w in m.warnings for x in ("o-temp", "o-pain", "o-smoke"))


def test_spec_bundle_example_entries_map(tmp_path):
    bundle = json.loads((SPEC / "bundle-example.json").read_text())
    folder = bundle_to_ndjson(bundle, tmp_path / "fhir")
    patient = {"resourceType": "Patient", "id": "347"}
    (folder / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    with NdjsonFolderSource(folder) as src:
        rec = src.patient_record("347")
    m = map_record(rec, as_of=dt.date(2022, 1, 1))
    assert m.patient_id == "347"
