"""FHIR R4 resources of one synthetic patient (plain JSON dicts, Bulk Data NDJSON lines).

Codes and units come from the clinical tables (``cds/data/*.csv``) so the mapping reads
them back with the same tables.  Every reference points at a resource of the same
cohort (Patient, Encounter, MedicationRequest), so a whole cohort loads into a validating
FHIR server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from cds.clinical_tables import ConditionSpec, condition_specs
from cds.synth import _ids
from cds.synth.cohort import HF_TYPES, Cohort
from cds.synth.medications import RXNORM, Prescription, dose_text, stop_visit
from cds.synth.visits import ECHO, VITALS, Visits, decimals

Resource = dict[str, Any]
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Preferred ICD-10-CM code of a condition per HF type where it differs.
HF_ICD = {"hfref": "I50.22", "hfmref": "I50.9", "hfpef": "I50.32"}
ADHF_ICD = ("I50.23", "I50.43", "I50.33")


@dataclass(frozen=True)
class SeriesInfo:
    """A DICOM series written for a patient (for the ImagingStudy).

    Args:
        uid: SeriesInstanceUID.
        number: SeriesNumber.
        description: SeriesDescription.
        sop_uids: SOPInstanceUIDs in InstanceNumber order.
    """

    uid: str
    number: int
    description: str
    sop_uids: tuple[str, ...]


@dataclass(frozen=True)
class StudyInfo:
    """A DICOM study written for a patient."""

    uid: str
    day: int
    series: tuple[SeriesInfo, ...]


def iso(ref: date, day: int) -> str:
    return (ref + timedelta(days=int(day))).isoformat()


def _cond_icd(spec: ConditionSpec) -> str:
    with_dot = [c for c in spec.icd10 if "." in c]
    return with_dot[0] if with_dot else spec.icd10[0]


def snomed_coding(spec: ConditionSpec) -> list[dict[str, str]]:
    """The condition's SNOMED CT Coding, or none when the table row has no code."""
    if not spec.snomed:
        return []
    return [{"system": SNOMED, "code": spec.snomed, "display": spec.label}]


def _ref(kind: str, rid: str) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def _cc(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


class PatientWriter:
    """Builds every resource of one patient.

    Args:
        c: the cohort state.
        vis: the visits and measured values.
        assay: feature -> factor on the reported values of the site's laboratory.
    """

    def __init__(self, c: Cohort, vis: Visits, assay: dict[str, float] | None = None) -> None:
        self.c = c
        #: feature -> factor of the site's assay on every reported value (case-mix shift)
        self.assay = dict(assay or {})
        self.vis = vis
        self.ref = c.reference_date
        self.conditions = {s.name: s for s in condition_specs()}

    def encounter_ids(self, i: int) -> list[str]:
        pid = self.c.patient_ids[i]
        return [f"{pid}-enc-{k}" for k in range(int(self.vis.n_visits[i]))]

    def patient(self, i: int) -> Resource:
        c = self.c
        age_days = int(round(c.age[i] * 365.25)) + int(c.index_days[i] % 97)
        return {
            "resourceType": "Patient",
            "id": c.patient_ids[i],
            "identifier": [
                {
                    "use": "usual",
                    "type": _cc(
                        "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "MR",
                        "Medical record number",
                    ),
                    "system": _ids.MRN_SYSTEM,
                    "value": c.mrns[i],
                }
            ],
            "active": True,
            "gender": "male" if c.male[i] else "female",
            "birthDate": iso(self.ref, -age_days),
        }

    def encounters(self, i: int) -> list[Resource]:
        c, vis = self.c, self.vis
        pid = c.patient_ids[i]
        out = []
        for k, eid in enumerate(self.encounter_ids(i)):
            day = int(vis.days[i, k])
            if k == 0:
                admit, los = day - 1, int(c.length_of_stay[i])
                out.append(
                    {
                        "resourceType": "Encounter",
                        "id": eid,
                        "status": "finished",
                        "class": {
                            "system": ACT_CODE,
                            "code": "IMP",
                            "display": "inpatient encounter",
                        },
                        "type": [_cc(SNOMED, "32485007", "Hospital admission")],
                        "subject": _ref("Patient", pid),
                        "period": {
                            "start": iso(self.ref, admit) + "T14:00:00Z",
                            "end": iso(self.ref, admit + los) + "T11:00:00Z",
                        },
                        "reasonCode": [_cc(SNOMED, "84114007", "Heart failure")],
                        "hospitalization": {
                            "dischargeDisposition": _cc(
                                "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                                "home",
                                "Home",
                            )
                        },
                    }
                )
            else:
                out.append(
                    {
                        "resourceType": "Encounter",
                        "id": eid,
                        "status": "finished",
                        "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                        "type": [_cc(SNOMED, "390906007", "Follow-up encounter")],
                        "subject": _ref("Patient", pid),
                        "period": {
                            "start": iso(self.ref, day) + "T10:00:00Z",
                            "end": iso(self.ref, day) + "T10:30:00Z",
                        },
                        "reasonCode": [_cc(SNOMED, "84114007", "Heart failure")],
                    }
                )
        return out

    def conditions_for(self, i: int, rng: np.random.Generator) -> list[Resource]:
        c = self.c
        pid = c.patient_ids[i]
        enc0 = self.encounter_ids(i)[0]
        hf = HF_TYPES[int(c.hf_type[i])]
        admit_day = int(self.vis.days[i, 0]) - 1
        items: list[tuple[str, str, str, int]] = []  # name, icd, category, onset day
        items.append((hf, HF_ICD[hf], "problem-list-item", -int(round(c.hf_months[i] * 30.44))))
        for name, present in c.conditions.items():
            if not present[i]:
                continue
            if name == "adhf":
                items.append((name, ADHF_ICD[int(c.hf_type[i])], "encounter-diagnosis", admit_day))
            elif name == "edema":
                items.append(
                    (name, _cond_icd(self.conditions[name]), "encounter-diagnosis", admit_day)
                )
            else:
                onset = admit_day - int(rng.integers(60, 5000))
                items.append((name, _cond_icd(self.conditions[name]), "problem-list-item", onset))
        out = []
        for name, icd, cat, onset in items:
            spec = self.conditions[name]
            res: Resource = {
                "resourceType": "Condition",
                "id": f"{pid}-cond-{name.replace('_', '-')}",
                "clinicalStatus": _cc(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "verificationStatus": _cc(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "confirmed",
                    "Confirmed",
                ),
                "category": [
                    _cc(
                        COND_CAT,
                        cat,
                        "Encounter Diagnosis"
                        if cat == "encounter-diagnosis"
                        else "Problem List Item",
                    )
                ],
                "code": {
                    "coding": [
                        *snomed_coding(spec),
                        {"system": ICD10CM, "code": icd},
                    ],
                    "text": spec.label,
                },
                "subject": _ref("Patient", pid),
                "onsetDateTime": iso(self.ref, min(onset, admit_day)),
                "recordedDate": iso(self.ref, admit_day + 1),
            }
            if cat == "encounter-diagnosis":
                res["encounter"] = _ref("Encounter", enc0)
            out.append(res)
        return out

    def observations(self, i: int) -> tuple[list[Resource], list[tuple[str, str, float, str]]]:
        """Observations and the (observation id, feature, value, unit) of implausible ones."""
        vis, c = self.vis, self.c
        pid = c.patient_ids[i]
        enc = self.encounter_ids(i)
        out: list[Resource] = []
        bad: list[tuple[str, str, float, str]] = []
        ks, fs = np.nonzero(vis.measured[i])
        for k, f in zip(ks.tolist(), fs.tolist(), strict=True):
            spec = vis.specs[f]
            code, unit, factor = spec.conversions[int(vis.alt[i, f])]
            value = float(vis.value[i, k, f]) / factor * self.assay.get(spec.name, 1.0)
            value = round(value, decimals(spec, value, unit))
            if spec.name == "nyha_class" and not vis.implausible[i, k, f]:
                value = int(value)
            oid = f"{pid}-obs-{k}-{spec.name.replace('_', '-')}"
            cat = (
                "vital-signs"
                if spec.name in VITALS
                else "imaging"
                if spec.name in ECHO
                else "laboratory"
            )
            if spec.name == "nyha_class":
                cat = "exam"
            hour = "08:30:00" if k == 0 else "10:15:00"
            out.append(
                {
                    "resourceType": "Observation",
                    "id": oid,
                    "status": "final",
                    "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
                    "code": _cc(LOINC, code, spec.label, spec.label),
                    "subject": _ref("Patient", pid),
                    "encounter": _ref("Encounter", enc[k]),
                    "effectiveDateTime": f"{iso(self.ref, int(vis.days[i, k]))}T{hour}Z",
                    "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                }
            )
            if vis.implausible[i, k, f]:
                bad.append((oid, spec.name, value, unit))
        return out, bad

    def medication_requests(self, i: int, rx: list[Prescription]) -> list[Resource]:
        pid = self.c.patient_ids[i]
        enc = self.encounter_ids(i)
        n_vis = int(self.vis.n_visits[i])
        out = []
        for j, p in enumerate(rx):
            day = int(self.vis.days[i, p.visit]) + (
                int(self.c.length_of_stay[i]) - 1 if p.visit == 0 else 0
            )
            res: Resource = {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-rx-{j}",
                "status": p.status,
                "intent": "order",
                "medicationCodeableConcept": _cc(RXNORM, p.drug.rxcui, p.drug.name, p.drug.name),
                "subject": _ref("Patient", pid),
                "encounter": _ref("Encounter", enc[p.visit]),
                "authoredOn": iso(self.ref, day),
                "dosageInstruction": [
                    {
                        "text": dose_text(p.drug, p.dose),
                        "doseAndRate": [
                            {
                                "doseQuantity": {
                                    "value": p.dose,
                                    "unit": "mg",
                                    "system": UCUM,
                                    "code": "mg",
                                }
                            }
                        ],
                    }
                ],
            }
            end = stop_visit(p, rx, n_vis)
            if end is not None:
                res["dispenseRequest"] = {
                    "validityPeriod": {
                        "start": iso(self.ref, day),
                        "end": iso(self.ref, int(self.vis.days[i, end])),
                    }
                }
            if p.prior is not None:
                res["priorPrescription"] = _ref("MedicationRequest", f"{pid}-rx-{p.prior}")
            out.append(res)
        return out

    def document(self, i: int, k: int, text: str, discharge: bool) -> Resource:
        pid = self.c.patient_ids[i]
        day = int(self.vis.days[i, k]) + (int(self.c.length_of_stay[i]) - 1 if discharge else 0)
        code, display = (
            ("18842-5", "Discharge summary") if discharge else ("11506-3", "Progress note")
        )
        return {
            "resourceType": "DocumentReference",
            "id": f"{pid}-doc-{k}",
            "status": "current",
            "docStatus": "final",
            "type": _cc(LOINC, code, display, display),
            "category": [
                _cc(
                    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                    "clinical-note",
                    "Clinical Note",
                )
            ],
            "subject": _ref("Patient", pid),
            "date": f"{iso(self.ref, day)}T17:00:00Z",
            "content": [
                {
                    "attachment": {
                        "contentType": "text/plain; charset=utf-8",
                        "language": "en",
                        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                        "title": display,
                    }
                }
            ],
            "context": {"encounter": [_ref("Encounter", self.encounter_ids(i)[k])]},
        }

    def imaging_study(self, i: int, study: StudyInfo) -> Resource:
        pid = self.c.patient_ids[i]
        series = []
        for s in study.series:
            series.append(
                {
                    "uid": s.uid,
                    "number": s.number,
                    "modality": {"system": DICOM_DCM, "code": "MR"},
                    "description": s.description,
                    "numberOfInstances": len(s.sop_uids),
                    "bodySite": {
                        "system": SNOMED,
                        "code": "80891009",
                        "display": "Heart structure",
                    },
                    "instance": [
                        {
                            "uid": u,
                            "sopClass": {
                                "system": "urn:ietf:rfc:3986",
                                "code": f"urn:oid:{MR_STORAGE}",
                            },
                            "number": n + 1,
                        }
                        for n, u in enumerate(s.sop_uids)
                    ],
                }
            )
        return {
            "resourceType": "ImagingStudy",
            "id": f"{pid}-cmr",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.uid}"}],
            "status": "available",
            "modality": [{"system": DICOM_DCM, "code": "MR"}],
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", self.encounter_ids(i)[0]),
            "started": f"{iso(self.ref, study.day)}T13:00:00Z",
            "numberOfSeries": len(series),
            "numberOfInstances": sum(len(s.sop_uids) for s in study.series),
            "description": "Cardiac MRI with late gadolinium enhancement",
            "series": series,
        }


def group(c: Cohort) -> Resource:
    """The follow-up Group (cohort ``group:hf-followup``)."""
    return {
        "resourceType": "Group",
        "id": _ids.GROUP_ID,
        "identifier": [
            {
                "system": "urn:mprtm:synthetic:group",
                "value": f"{_ids.GROUP_ID}-{_ids.cohort_tag(c.seed)}",
            }
        ],
        "active": True,
        "type": "person",
        "actual": True,
        "name": "Heart failure follow-up",
        "quantity": c.n,
        "member": [{"entity": _ref("Patient", pid)} for pid in c.patient_ids],
    }
