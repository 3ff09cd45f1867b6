"""Small FHIR R4 test cohorts built in code (valid R4; ids unique per call)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

LOINC = "http://loinc.org"
HEART_RATE, LVEF, CREATININE_MG = "8867-4", "10230-1", "2160-0"


@dataclass
class Cohort:
    """Resources of a test cohort and what a pull must find."""

    prefix: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    group_id: str = ""
    #: patient id -> {"Observation": n, "Condition": n, ...}
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    #: "DocumentReference/<id>" -> text
    texts: dict[str, str] = field(default_factory=dict)

    def by_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == rtype]


def _obs(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def build_cohort(n_patients: int = 3, n_obs: int = 4, prefix: str = "") -> Cohort:
    """``n_patients`` patients, each with ``n_obs`` heart-rate Observations (one of them
    in 2019, outside a 2024+ window), an LVEF, a creatinine in mg/dL, a Condition, a
    MedicationRequest, a MedicationStatement, an Encounter, an ImagingStudy and two
    DocumentReferences (inline text; text via Binary); and a Group of all of them."""
    prefix = prefix or uuid.uuid4().hex[:8]
    c = Cohort(prefix=prefix, group_id=f"{prefix}-grp")
    for i in range(n_patients):
        pid = f"{prefix}-p{i}"
        c.patient_ids.append(pid)
        c.resources.append(
            {
                "resourceType": "Patient",
                "id": pid,
                "gender": "female",
                "identifier": [{"system": "urn:test:mrn", "value": pid}],
            }
        )
        for j in range(n_obs):
            year = 2019 if j == 0 else 2024
            c.resources.append(
                _obs(f"{pid}-hr{j}", pid, HEART_RATE, 60 + j, "/min", f"{year}-0{1 + j % 9}-15")
            )
        c.resources.append(_obs(f"{pid}-ef", pid, LVEF, 35 + i, "%", "2024-03-01"))
        c.resources.append(_obs(f"{pid}-cr", pid, CREATININE_MG, 1.1, "mg/dL", "2024-03-02"))
        ref = {"reference": f"Patient/{pid}"}
        c.resources += [
            {
                "resourceType": "Condition",
                "id": f"{pid}-hf",
                "subject": ref,
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "84114007"}]},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
            },
            {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-mr",
                "status": "active",
                "intent": "order",
                "subject": ref,
                "medicationCodeableConcept": {"text": "bisoprolol 5 mg"},
            },
            {
                "resourceType": "MedicationStatement",
                "id": f"{pid}-ms",
                "status": "active",
                "subject": ref,
                "medicationCodeableConcept": {"text": "furosemide 40 mg"},
            },
            {
                "resourceType": "Encounter",
                "id": f"{pid}-enc",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": ref,
            },
            {
                "resourceType": "ImagingStudy",
                "id": f"{pid}-img",
                "status": "available",
                "subject": ref,
                "identifier": [
                    {"system": "urn:dicom:uid", "value": f"urn:oid:1.2.826.0.1.{i + 1}"}
                ],
            },
        ]
        inline = f"Follow-up note {i}: stable, NYHA II."
        binary_text = f"Discharge letter {i}: LVEF reduced."
        c.resources.append(
            {
                "resourceType": "Binary",
                "id": f"{pid}-bin",
                "contentType": "text/plain",
                "data": base64.b64encode(binary_text.encode()).decode(),
            }
        )
        c.resources += [
            {
                "resourceType": "DocumentReference",
                "id": f"{pid}-note",
                "status": "current",
                "subject": ref,
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain; charset=utf-8",
                            "data": base64.b64encode(inline.encode()).decode(),
                        }
                    }
                ],
            },
            {
                "resourceType": "DocumentReference",
                "id": f"{pid}-letter",
                "status": "current",
                "subject": ref,
                "content": [
                    {"attachment": {"contentType": "text/plain", "url": f"Binary/{pid}-bin"}}
                ],
            },
        ]
        c.texts[f"DocumentReference/{pid}-note"] = inline
        c.texts[f"DocumentReference/{pid}-letter"] = binary_text
        c.expected[pid] = {
            "Observation": n_obs + 2,
            "Condition": 1,
            "MedicationRequest": 1,
            "MedicationStatement": 1,
            "Encounter": 1,
            "ImagingStudy": 1,
            "DocumentReference": 2,
        }
    c.resources.append(
        {
            "resourceType": "Group",
            "id": c.group_id,
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in c.patient_ids],
        }
    )
    return c


def transaction_of(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs each resource at its id."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
