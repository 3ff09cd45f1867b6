"""The NDJSON folder source: indexing, malformed lines, cohorts, filters, attachments."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json

import pytest

from connectors.errors import FhirError, FhirInvalidResource, ResourceNotFound
from connectors.fhir.ndjson import NdjsonFolderSource, UnsupportedSearch
from tests.mapping.fhir_builders import (
    ICD10CM,
    SNOMED,
    condition,
    document,
    med_request,
    obs,
    patient,
    write_ndjson,
)


@pytest.fixture()
def folder(tmp_path):
    res = [
        patient("p1", mrn="M1"),
        patient("p2", gender="female", birth="1980-01-01"),
        patient("p3"),
        obs("o1", "p1", "2160-0", 1.1, "mg/dL", "2026-10-01"),
        obs("o2", "p1", "8310-5", 37.0, "Cel", "2026-10-01"),
        obs("o3", "p1", "2160-0", 1.0, "mg/dL", "2024-01-01"),
        obs("o4", "p2", "2160-0", 0.9, "mg/dL", "2026-10-01"),
        condition("c1", "p1", ICD10CM, "I50.22"),
        condition("c2", "p2", SNOMED, "73211009"),
        med_request("m1", "p1", "Bisoprolol 5 MG"),
        document("d1", "p1", "note one"),
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p2"},
            "period": {"start": "2026-10-20", "end": "2026-10-25"},
        },
        {
            "resourceType": "Encounter",
            "id": "e2",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2025-01-01", "end": "2025-01-01"},
        },
        {
            "resourceType": "Group",
            "id": "hf",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p2"}},
                {"entity": {"reference": "Patient/p1"}, "inactive": True},
                {"entity": {"reference": "Patient/ghost"}},
            ],
        },
    ]
    bad = [
        '{"resourceType": "Observation", "id": "broken-7", "status": ',
        "[1, 2, 3]",
        json.dumps(obs("o-bad", "p1", "2160-0", 1.0, "mg/dL", "2026-10-01", status=5)),
        "",
    ]
    return write_ndjson(tmp_path / "fhir", res, extra_lines={"Observation": bad})


def test_malformed_lines_are_skipped_with_file_line_and_id(folder):
    src = NdjsonFolderSource(folder)
    assert any(
        "Observation.ndjson line 5" in w and "broken-7" in w and "not valid JSON" in w
        for w in src.warnings
    )
    assert any("Observation.ndjson line 6" in w for w in src.warnings)
    rec = src.patient_record("p1")
    assert [o.id for o in rec.observations] == ["o1", "o2", "o3"]
    assert any(
        w.startswith("Observation/o-bad (Observation.ndjson line 7)") and "status" in w
        for w in rec.warnings
    )


def test_patient_record_contents(folder):
    src = NdjsonFolderSource(folder)
    rec = src.patient_record("p1")
    assert rec.patient_id == "p1"
    assert [c.id for c in rec.conditions] == ["c1"]
    assert [m.id for m in rec.medication_requests] == ["m1"]
    assert [e.id for e in rec.encounters] == ["e2"]
    assert rec.document_texts == {"DocumentReference/d1": "note one"}
    with pytest.raises(ResourceNotFound, match="Patient/nobody"):
        src.patient_record("nobody")


def test_loinc_and_since_filters(folder):
    src = NdjsonFolderSource(folder)
    rec = src.patient_record("p1", loinc_codes=("2160-0",), since=dt.date(2026, 1, 1))
    assert [o.id for o in rec.observations] == ["o1"]


def test_cohorts(folder):
    src = NdjsonFolderSource(folder)
    assert src.cohort_patient_ids("all") == ["p1", "p2", "p3"]
    # a member without a Patient in the folder stays in the cohort (the batch reports it)
    assert src.cohort_patient_ids("group:hf") == ["p2", "ghost"]
    assert any("Group/hf" in w and "Patient/ghost" in w for w in src.warnings)
    with pytest.raises(ResourceNotFound, match="Patient/ghost"):
        src.patient_record("ghost")
    with pytest.raises(ResourceNotFound, match="Group/nope"):
        src.cohort_patient_ids("group:nope")
    with pytest.raises(FhirError, match="unknown cohort"):
        src.cohort_patient_ids("everyone")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Condition?code=http://hl7.org/fhir/sid/icd-10-cm|I50.22", ["p1"]),
        ("Condition?code:below=I50", ["p1"]),
        ("Condition?code=73211009,I50.22", ["p1", "p2"]),
        ("Condition?code=I50&clinical-status=active", []),
        ("Patient?gender=female", ["p2"]),
        ("Patient?birthdate=ge1970", ["p2"]),
        ("Patient?identifier=urn:example:mrn|M1", ["p1"]),
        ("Patient?_has:Encounter:patient:date=ge2026-10-01", ["p2"]),
        ("Patient?_has:Encounter:patient:date=ge2026-10-25", ["p2"]),
        ("Patient?_has:Encounter:patient:date=ge2026-10-26", []),
        ("Encounter?class=IMP&date=ge2026-10-01", ["p2"]),
        ("Patient?_has:Condition:subject:code:below=I50&_count=50", ["p1"]),
        (
            "Patient?_has:Encounter:patient:date=ge2024-01-01&_has:Condition:patient:code=I50.22",
            ["p1"],
        ),
    ],
)
def test_search_cohorts(folder, query, expected):
    src = NdjsonFolderSource(folder)
    assert src.cohort_patient_ids(f"search:{query}") == expected


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("Patient?name=Smith", "name"),
        ("Condition?severity=severe", "severity"),
        ("Observation?code=2160-0", "Observation"),
        ("Patient?_has:Observation:patient:code=2160-0", "_has:Observation:patient:code"),
        ("Encounter?date=yesterday", "date"),
    ],
)
def test_unsupported_search_names_the_parameter(folder, query, named):
    src = NdjsonFolderSource(folder)
    with pytest.raises(UnsupportedSearch, match=named):
        src.cohort_patient_ids(f"search:{query}")


def test_binary_attachment_gz_files_and_html(tmp_path):
    doc = document("d1", "p1", "x")
    doc["content"] = [
        {"attachment": {"contentType": "text/html", "url": "Binary/b1"}},
        {"attachment": {"contentType": "application/pdf", "data": "JVBERi0="}},
    ]
    binary = {
        "resourceType": "Binary",
        "id": "b1",
        "contentType": "text/html",
        "data": base64.b64encode(b"<p>Dyspnoea &amp; oedema</p>").decode(),
    }
    folder = write_ndjson(tmp_path / "f", [patient("p1"), doc, binary])
    # a gzip-compressed file from a Bulk client
    raw = (folder / "DocumentReference.ndjson").read_bytes()
    (folder / "DocumentReference.ndjson").unlink()
    with gzip.open(folder / "DocumentReference.000.ndjson.gz", "wb") as fh:
        fh.write(raw)
    rec = NdjsonFolderSource(folder).patient_record("p1")
    assert rec.document_texts["DocumentReference/d1"] == "Dyspnoea & oedema"
    assert any("DocumentReference/d1" in w and "PDF not readable" in w for w in rec.warnings)


def test_referenced_medication_is_resolved(tmp_path):
    mr = med_request("m1", "p1", "x")
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "Medication/med-1"}
    med = {"resourceType": "Medication", "id": "med-1", "code": {"text": "Eplerenone 25 mg"}}
    missing = med_request("m2", "p1", "x")
    del missing["medicationCodeableConcept"]
    missing["medicationReference"] = {"reference": "Medication/gone"}
    rec = NdjsonFolderSource(
        write_ndjson(tmp_path / "f", [patient("p1"), mr, med, missing])
    ).patient_record("p1")
    assert rec.medications["Medication/med-1"].code.text == "Eplerenone 25 mg"
    assert any("Medication/gone" in w for w in rec.warnings)


def test_unparseable_patient_and_missing_folder(tmp_path):
    folder = write_ndjson(tmp_path / "f", [{"resourceType": "Patient", "id": "p1", "gender": 3}])
    with pytest.raises(FhirInvalidResource, match="Patient/p1"):
        NdjsonFolderSource(folder).patient_record("p1")
    with pytest.raises(FhirError, match="not found"):
        NdjsonFolderSource(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FhirError, match="no .ndjson"):
        NdjsonFolderSource(tmp_path / "empty")


def test_absolute_and_urn_references(tmp_path):
    o1 = obs("o1", "p1", "2160-0", 1.0, "mg/dL", "2026-10-01")
    o1["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p1/_history/3"}
    o2 = obs("o2", "p1", "2160-0", 1.0, "mg/dL", "2026-10-01")
    o2["subject"] = {"reference": "urn:uuid:p1"}
    rec = NdjsonFolderSource(write_ndjson(tmp_path / "f", [patient("p1"), o1, o2])).patient_record(
        "p1"
    )
    assert [o.id for o in rec.observations] == ["o1", "o2"]


def test_file_rewritten_in_place_gives_warnings_not_a_crash(folder):
    src = NdjsonFolderSource(folder)
    (folder / "Observation.ndjson").write_text("")  # truncated under the open source
    rec = src.patient_record("p1")
    assert rec.observations == []
    assert any("Observation/" in w or "Observation.ndjson" in w for w in rec.warnings)
    src.close()
    src.close()  # idempotent
