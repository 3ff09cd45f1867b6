"""cond_* and med_* flags, medication text, notes, basis."""

from __future__ import annotations

import datetime as dt

from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.patient import Patient

from cds.mapping import map_record
from connectors.fhir.base import PatientRecord
from tests.mapping.fhir_builders import (
    ICD10CM,
    SNOMED,
    condition,
    document,
    med_request,
    patient,
    record,
)

AS_OF = dt.date(2026, 11, 1)


def test_condition_codes_snomed_and_icd10_prefixes():
    rec = record(
        patient("p1"),
        [
            condition("c1", "p1", SNOMED, "73211009"),  # diabetes
            condition("c2", "p1", ICD10CM, "I48.91"),  # AF, below I48
            condition("c3", "p1", "http://hl7.org/fhir/sid/icd-10", "N183"),  # CKD, no dot
            condition("c4", "p1", SNOMED, "195967001"),  # asthma: not in the table
            condition("c5", "p1", ICD10CM, "J45.909"),  # asthma: not COPD (MAGGIC's COPD)
        ],
    )
    m = map_record(rec, as_of=AS_OF)
    n = m.model_input.numeric
    assert n["cond_diabetes"] == n["cond_atrial_fibrillation"] == n["cond_ckd"] == 1.0
    assert n["cond_hypertension"] == n["cond_pulmonary_disease"] == 0.0
    assert "Condition/c5" not in m.basis
    copd = record(patient("p2"), [condition("c6", "p2", ICD10CM, "J44.1")])
    assert map_record(copd, as_of=AS_OF).model_input.numeric["cond_pulmonary_disease"] == 1.0
    assert m.features["cond_atrial_fibrillation"].source == "Condition/c2"
    assert "Condition/c4" not in m.basis
    assert {"Condition/c1", "Condition/c2", "Condition/c3"} <= set(m.basis)


def test_hfmref_uses_the_international_snomed_code():
    """788950000, "Heart failure with mid range ejection fraction" (International)."""
    m = map_record(record(patient("p1"), [condition("c1", "p1", SNOMED, "788950000")]), as_of=AS_OF)
    assert m.model_input.numeric["cond_hfmref"] == 1.0


def test_condition_status_rules():
    eie = condition("c2", "p1", SNOMED, "38341003")
    eie["verificationStatus"] = {"coding": [{"code": "entered-in-error"}]}
    later = condition("c4", "p1", SNOMED, "49436004", onsetDateTime="2026-12-01")
    rec = record(
        patient("p1"),
        [
            condition("c1", "p1", SNOMED, "73211009", clinical="resolved"),
            eie,
            condition("c3", "p1", SNOMED, "13645005", clinical="relapse"),
            later,
            condition("c5", "p1", SNOMED, "55822004", clinical=None),
        ],
    )
    n = map_record(rec, as_of=AS_OF).model_input.numeric
    assert n["cond_diabetes"] == 0.0  # resolved
    assert n["cond_hypertension"] == 0.0  # entered in error
    assert n["cond_pulmonary_disease"] == 1.0  # relapse
    assert n["cond_atrial_fibrillation"] == 0.0  # onset after the as-of date
    assert n["cond_hyperlipidemia"] == 1.0  # no clinicalStatus counts as active


def test_medication_classes_and_text():
    rec = record(
        patient("p1"),
        [
            med_request("m1", "p1", "Metoprolol succinate 47.5 MG Extended Release Oral Tablet"),
            med_request("m2", "p1", "sacubitril 49 MG / valsartan 51 MG Oral Tablet"),
            med_request("m3", "p1", "Atorvastatin 20 MG", status="stopped"),
            med_request("m4", "p1", "Furosemide 40 MG", status="entered-in-error"),
            med_request("m5", "p1", "Dapagliflozin 10 MG", authored="2026-12-01"),
            med_request("m6", "p1", "Paracetamol 500 MG"),
            med_request("m7", "p1", "Acetylsalicylic acid 100 mg gastro-resistant tablet"),
        ],
    )
    m = map_record(rec, as_of=AS_OF)
    n = m.model_input.numeric
    assert n["med_beta_blocker"] == n["med_arni"] == n["med_arb"] == n["med_antiplatelet"] == 1.0
    assert n["med_statin"] == n["med_loop_diuretic"] == n["med_sglt2i"] == 0.0
    assert m.features["med_arni"].source == "MedicationRequest/m2"
    text = m.model_input.text or ""
    assert text.startswith("Medications: ")
    assert "Metoprolol" in text and "Paracetamol" in text
    assert "Atorvastatin" not in text and "Dapagliflozin" not in text
    assert "MedicationRequest/m6" in m.basis and "MedicationRequest/m3" not in m.basis


def test_stopped_request_whose_validity_covers_as_of_counts():
    mr = med_request(
        "m1",
        "p1",
        "Spironolactone 25 MG",
        status="completed",
        dispenseRequest={"validityPeriod": {"start": "2026-01-01", "end": "2027-01-01"}},
    )
    n = map_record(record(patient("p1"), [mr]), as_of=AS_OF).model_input.numeric
    assert n["med_mra"] == 1.0


def test_contained_and_referenced_medication_and_statement():
    contained = MedicationRequest.model_validate(
        {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "intent": "order",
            "contained": [{"resourceType": "Medication", "id": "x", "code": {"text": "Warfarin"}}],
            "medicationReference": {"reference": "#x"},
            "subject": {"reference": "Patient/p1"},
        }
    )
    referenced = MedicationRequest.model_validate(
        {
            "resourceType": "MedicationRequest",
            "id": "m2",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": "Medication/med-7"},
            "subject": {"reference": "Patient/p1"},
        }
    )
    statement = MedicationStatement.model_validate(
        {
            "resourceType": "MedicationStatement",
            "id": "s1",
            "status": "active",
            "medicationCodeableConcept": {"text": "Digoxin 0.125 mg"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-05-01",
        }
    )
    rec = PatientRecord(
        patient=Patient.model_validate(patient("p1")),
        medication_requests=[contained, referenced],
        medication_statements=[statement],
        medications={
            "Medication/med-7": Medication.model_validate(
                {"resourceType": "Medication", "id": "med-7", "code": {"text": "Bisoprolol 5 mg"}}
            )
        },
    )
    n = map_record(rec, as_of=AS_OF).model_input.numeric
    assert n["med_anticoagulant"] == n["med_beta_blocker"] == n["med_digoxin"] == 1.0


def test_notes_most_recent_k_newest_first():
    docs = [
        document("d1", "p1", "first note", "2026-06-01T10:00:00Z"),
        document("d2", "p1", "second note", "2026-08-01T10:00:00Z"),
        document("d3", "p1", "third note", "2026-10-01T10:00:00Z"),
        document("d4", "p1", "future note", "2026-12-01T10:00:00Z"),
        document("d5", "p1", "superseded note", "2026-10-02T10:00:00Z", status="superseded"),
    ]
    texts = {f"DocumentReference/{d['id']}": d["id"] + " text" for d in docs}
    rec = record(patient("p1"), docs, texts)
    m = map_record(rec, as_of=AS_OF, max_notes=2)
    assert m.notes == ["DocumentReference/d3", "DocumentReference/d2"]
    text = m.model_input.text or ""
    assert text.index("d3 text") < text.index("d2 text")
    assert "d1 text" not in text and "d4 text" not in text and "d5 text" not in text
    assert "Note 2026-10-01: d3 text" in text
    assert m.basis[-2:] == ["DocumentReference/d3", "DocumentReference/d2"]


def test_no_text_when_nothing_to_say():
    m = map_record(record(patient("p1"), []), as_of=AS_OF)
    assert m.model_input.text is None
    assert m.basis == ["Patient/p1"]


def test_as_dict_hides_text_unless_asked():
    docs = [document("d1", "p1", "x", "2026-10-01T10:00:00Z")]
    rec = record(patient("p1"), docs, {"DocumentReference/d1": "secret clinical words"})
    m = map_record(rec, as_of=AS_OF)
    assert "secret" not in str(m.as_dict())
    assert "secret" in str(m.as_dict(include_text=True))
