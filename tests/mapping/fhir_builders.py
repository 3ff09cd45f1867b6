"""Small FHIR R4 resources (as JSON dicts) and NDJSON folders for the mapping tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from connectors.fhir.base import PatientRecord

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def patient(pid: str, *, birth: str = "1960-06-15", gender: str = "male", mrn: str = "") -> dict:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender}
    if birth:
        res["birthDate"] = birth
    if mrn:
        res["identifier"] = [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": "urn:example:mrn",
                "value": mrn,
            }
        ]
    return res


def obs(
    oid: str,
    pid: str,
    loinc: str,
    value: float | None,
    unit: str | None,
    date: str,
    *,
    status: str = "final",
    ucum: bool = True,
    **extra: Any,
) -> dict:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
    }
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit is not None:
            q["unit"] = unit
            if ucum:
                q["system"] = UCUM
                q["code"] = unit
        res["valueQuantity"] = q
    res.update(extra)
    return res


def condition(
    cid: str, pid: str, system: str, code: str, *, clinical: str | None = "active", **extra: Any
) -> dict:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if clinical:
        res["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    res.update(extra)
    return res


def med_request(
    mid: str,
    pid: str,
    name: str,
    *,
    status: str = "active",
    authored: str = "2026-01-10",
    **extra: Any,
) -> dict:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "0", "display": name}]},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": authored,
    }
    res.update(extra)
    return res


def document(
    did: str, pid: str, text: str, date: str = "2026-10-05T09:00:00Z", *, status: str = "current"
) -> dict:
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "status": status,
        "subject": {"reference": f"Patient/{pid}"},
        "date": date,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ],
    }


def write_ndjson(
    folder: Path, resources: Iterable[dict], *, extra_lines: dict | None = None
) -> Path:
    """Write resources into <Type>.ndjson files; ``extra_lines`` appends raw lines per file."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for res in resources:
        by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
    for rtype, lines in (extra_lines or {}).items():
        by_type.setdefault(rtype, []).extend(lines)
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


_MODELS = {
    "Observation": (Observation, "observations"),
    "Condition": (Condition, "conditions"),
    "MedicationRequest": (MedicationRequest, "medication_requests"),
    "MedicationStatement": (MedicationStatement, "medication_statements"),
    "DocumentReference": (DocumentReference, "documents"),
}


def record(
    pat: dict, resources: Iterable[dict], texts: dict[str, str] | None = None
) -> PatientRecord:
    """A PatientRecord straight from JSON dicts (no source involved)."""
    rec = PatientRecord(patient=Patient.model_validate(pat))
    for res in resources:
        model, attr = _MODELS[res["resourceType"]]
        getattr(rec, attr).append(model.model_validate(res))
    rec.document_texts.update(texts or {})
    return rec
