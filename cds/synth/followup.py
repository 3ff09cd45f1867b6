"""The follow-up year as an EHR holds it (``mprtm synth --follow-up``).

From each patient's sampled event times (:func:`cds.synth.outcomes.sample`) this writes
what a hospital's record shows after the reference date, consistent with
``truth/labels.csv``:

* a death: ``Patient.deceasedDateTime`` and a cause-of-death Observation (LOINC 69453-9,
  an ICD-10 code: I-chapter for a cardiovascular cause);
* every first event of a hospitalisation process before death: an inpatient Encounter
  (class IMP, period, principal diagnosis as ``Encounter.diagnosis`` rank 1 pointing at
  an encounter-diagnosis Condition); a myocardial infarction or stroke also as a Condition
  with its onset, half of the infarctions with a PCI Procedure;
* some of those stays continue in another hospital: the first Encounter ends with
  discharge disposition ``other-hcf`` and a second one starts with admit source
  ``hosp-trans`` (its diagnosis may differ; the episode's diagnosis is the first one's);
* planned admissions (priority ``EL``: elective PCI, device replacement, chemotherapy)
  that readmission definitions exclude;
* outpatient contacts about 3, 6, 9 and 12 months after the reference date;
* loss to follow-up (records stop at a random day of the year) and patients whose year
  is not over at the data cut (records stop at the cut, which for them comes early).

Events, contacts and deaths are written up to the data cut (:data:`DATA_CUT_DAYS` after
the reference date), so some fall after the one-year window.  ``truth/follow_up.csv``
gives each patient's follow-up status and last observed day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cds.synth.cohort import Cohort
from cds.synth.fhir import ACT_CODE, ADHF_ICD, ICD10CM, LOINC, SNOMED, Resource, _cc, _ref, iso
from cds.synth.outcomes import DEATH_CV, DEATHS, HOSPS, Labels

#: Days after the reference date up to which the record is written (the data cut).
DATA_CUT_DAYS = 400
#: Share of patients lost to follow-up during the year (HF registries report 3-8 %).
LOST_SHARE = 0.05
#: Share of patients whose year is not over at the data cut.
UNFINISHED_SHARE = 0.04
PLANNED_SHARE = 0.08
TRANSFER_SHARE = 0.15
PCI_AFTER_MI = 0.5
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
CAUSE_OF_DEATH_LOINC = "69453-9"
PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
DIAG_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
#: Cause of death (ICD-10, WHO) per death process.
DEATH_CODE: dict[str, tuple[str, str]] = {
    "d_scd": ("I46.1", "Sudden cardiac death, so described"),
    "d_pump": ("I50.9", "Heart failure, unspecified"),
    "d_mi": ("I21.9", "Acute myocardial infarction, unspecified"),
    "d_stroke": ("I63.9", "Cerebral infarction, unspecified"),
    "d_ocv": ("I26.9", "Pulmonary embolism without mention of acute cor pulmonale"),
}
NON_CV_DEATH = (
    ("C34.9", "Malignant neoplasm of bronchus or lung, unspecified"),
    ("J18.9", "Pneumonia, unspecified"),
    ("J44.1", "Chronic obstructive pulmonary disease with acute exacerbation"),
    ("A41.9", "Sepsis, unspecified"),
    ("N17.9", "Acute renal failure, unspecified"),
)
#: Principal diagnosis (ICD-10-CM) per hospitalisation process (hf: by HF type).
HOSP_CODE: dict[str, tuple[tuple[str, str], ...]] = {
    "h_mi": (("I21.4", "Non-ST elevation myocardial infarction"),),
    "h_arrhythmia": (
        ("I48.91", "Unspecified atrial fibrillation"),
        ("I47.20", "Ventricular tachycardia, unspecified"),
    ),
    "h_stroke": (("I63.9", "Cerebral infarction, unspecified"),),
    "h_other": (
        ("J18.9", "Pneumonia, unspecified organism"),
        ("N39.0", "Urinary tract infection, site not specified"),
        ("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"),
        ("K92.2", "Gastrointestinal hemorrhage, unspecified"),
        ("E87.1", "Hypo-osmolality and hyponatremia"),
        ("S72.001A", "Fracture of unspecified part of neck of right femur"),
    ),
}
PLANNED = (  # principal diagnosis, procedure (SNOMED) or None
    (("I25.10", "Atherosclerotic heart disease of native coronary artery"),
     ("415070008", "Percutaneous coronary intervention")),
    (("Z45.02", "Encounter for adjustment and management of automatic implantable "
      "cardiac defibrillator"), ("233170003", "Replacement of implantable cardioverter "
      "defibrillator")),
    (("Z51.11", "Encounter for antineoplastic chemotherapy"), None),
)  # fmt: skip
PCI = ("415070008", "Percutaneous coronary intervention")
TRANSFER_DX = ("I48.91", "Unspecified atrial fibrillation")


@dataclass
class FollowUp:
    """One patient's follow-up: what was written and how far the record reaches.

    Args:
        resources: the resources to append (Encounter, Condition, Procedure, Observation).
        deceased: ``Patient.deceasedDateTime`` to set, or None.
        status: ``complete``, ``lost`` or ``unfinished``.
        last_day: last day after the reference date that the record covers.
    """

    resources: list[Resource] = field(default_factory=list)
    deceased: str | None = None
    status: str = "complete"
    last_day: int = DATA_CUT_DAYS


def _day(t_years: float) -> int:
    return int(np.ceil(t_years * 365.0))


class FollowUpWriter:
    """Writes the follow-up of each patient (see the module docstring).

    Args:
        c: the cohort state.
        labels: the sampled outcomes, with their event times.
        seed: the generator seed.
    """

    def __init__(self, c: Cohort, labels: Labels, seed: int) -> None:
        if not labels.times:
            raise ValueError("labels carry no event times")
        self.c = c
        self.t = labels.times
        self.seed = seed
        self.ref = c.reference_date

    def patient(self, i: int) -> FollowUp:
        c, ref = self.c, self.ref
        pid = c.patient_ids[i]
        rng = np.random.default_rng([self.seed, i, 0xF0110])
        out = FollowUp()
        u = rng.random()
        if u < LOST_SHARE:
            out.status, out.last_day = "lost", int(rng.integers(20, 345))
        elif u < LOST_SHARE + UNFINISHED_SHARE:
            out.status, out.last_day = "unfinished", int(rng.integers(150, 360))
        end = out.last_day
        t_death = min(float(self.t[k][i]) for k in DEATHS)
        cause = min(DEATHS, key=lambda k: float(self.t[k][i]))
        death_day = _day(t_death)
        alive_until = min(death_day, end)
        n = {"enc": 0, "cond": 0, "proc": 0}

        def next_id(kind: str) -> str:
            n[kind] += 1
            return f"{pid}-fu-{kind}-{n[kind]}"

        def encounter(
            day: int, days: int, dx: tuple[str, str], *, planned: bool = False
        ) -> Resource:
            cond_id = next_id("cond")
            enc_id = next_id("enc")
            stop = min(day + days, death_day) if death_day <= end else day + days
            enc: Resource = {
                "resourceType": "Encounter",
                "id": enc_id,
                "status": "finished",
                "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
                "type": [_cc(SNOMED, "32485007", "Hospital admission")],
                "subject": _ref("Patient", pid),
                "period": {
                    "start": iso(ref, day) + "T09:00:00Z",
                    "end": iso(ref, stop) + "T12:00:00Z",
                },
                "diagnosis": [
                    {
                        "condition": _ref("Condition", cond_id),
                        "use": _cc(DIAG_ROLE, "billing", "Billing"),
                        "rank": 1,
                    }
                ],
            }
            if planned:
                enc["priority"] = _cc(PRIORITY, "EL", "elective")
            else:
                enc["priority"] = _cc(PRIORITY, "EM", "emergency")
            out.resources.append(enc)
            out.resources.append(self._condition(pid, cond_id, enc_id, day, dx))
            return enc

        # deaths (only those the record reaches)
        if death_day <= end:
            out.deceased = iso(ref, death_day) + "T06:00:00Z"
            if cause in DEATH_CV:
                code, display = DEATH_CODE[cause]
            else:
                code, display = NON_CV_DEATH[int(rng.integers(len(NON_CV_DEATH)))]
            out.resources.append(
                {
                    "resourceType": "Observation",
                    "id": f"{pid}-fu-cause-of-death",
                    "status": "final",
                    "code": _cc(LOINC, CAUSE_OF_DEATH_LOINC, "Cause of death"),
                    "subject": _ref("Patient", pid),
                    "effectiveDateTime": out.deceased,
                    "valueCodeableConcept": _cc(ICD10_WHO, code, display),
                }
            )
        # the first event of each hospitalisation process, before death
        for k in HOSPS:
            tk = float(self.t[k][i])
            day = _day(tk)
            if tk >= t_death or day > end:
                continue
            if k == "h_hf":
                dx = (ADHF_ICD[int(c.hf_type[i])], "Acute on chronic heart failure")
            else:
                options = HOSP_CODE[k]
                dx = options[int(rng.integers(len(options)))]
            los = int(np.clip(np.round(rng.lognormal(np.log(5), 0.5)), 1, 25))
            enc = encounter(day, los, dx)
            if k in ("h_mi", "h_stroke"):
                kind = "myocardial infarction" if k == "h_mi" else "stroke"
                out.resources.append(
                    self._event_condition(pid, next_id("cond"), enc["id"], day, dx, kind)
                )
            if k == "h_mi" and rng.random() < PCI_AFTER_MI:
                out.resources.append(self._procedure(pid, next_id("proc"), enc["id"], day, PCI))
            stop_day = min(day + los, death_day)
            if rng.random() < TRANSFER_SHARE and stop_day < alive_until:
                enc["hospitalization"] = {
                    "dischargeDisposition": _cc(
                        DISPOSITION, "other-hcf", "Other healthcare facility"
                    )
                }
                tdx = TRANSFER_DX if k in ("h_other", "h_stroke") and rng.random() < 0.5 else dx
                nxt = encounter(stop_day, int(rng.integers(2, 6)), tdx)
                nxt["hospitalization"] = {
                    "admitSource": _cc(
                        ADMIT_SOURCE, "hosp-trans", "Transferred from other hospital"
                    )
                }
        # planned admissions
        if rng.random() < PLANNED_SHARE and alive_until > 15:
            day = int(rng.integers(10, alive_until))
            dx, proc = PLANNED[int(rng.integers(len(PLANNED)))]
            enc = encounter(day, 1 + int(rng.integers(0, 2)), dx, planned=True)
            if proc is not None:
                out.resources.append(self._procedure(pid, next_id("proc"), enc["id"], day, proc))
        # outpatient contacts
        for target in (90, 180, 270, 365):
            day = target + int(rng.integers(0, 30))
            if day >= alive_until or day > end:
                continue
            if target < 365 and rng.random() < 0.15:
                continue
            out.resources.append(
                {
                    "resourceType": "Encounter",
                    "id": next_id("enc"),
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                    "type": [_cc(SNOMED, "390906007", "Follow-up encounter")],
                    "subject": _ref("Patient", pid),
                    "period": {
                        "start": iso(ref, day) + "T10:00:00Z",
                        "end": iso(ref, day) + "T10:30:00Z",
                    },
                    "reasonCode": [_cc(SNOMED, "84114007", "Heart failure")],
                }
            )
        return out

    def _condition(
        self, pid: str, cid: str, enc_id: str, day: int, dx: tuple[str, str]
    ) -> Resource:
        return {
            "resourceType": "Condition",
            "id": cid,
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
                    "http://terminology.hl7.org/CodeSystem/condition-category",
                    "encounter-diagnosis",
                    "Encounter Diagnosis",
                )
            ],
            "code": {"coding": [{"system": ICD10CM, "code": dx[0], "display": dx[1]}]},
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc_id),
            "onsetDateTime": iso(self.ref, day),
            "recordedDate": iso(self.ref, day),
        }

    def _event_condition(
        self, pid: str, cid: str, enc_id: str, day: int, dx: tuple[str, str], kind: str
    ) -> Resource:
        res = self._condition(pid, cid, enc_id, day, dx)
        snomed = ("22298006", "Myocardial infarction") if "infarction" in kind else (
            "230690007", "Cerebrovascular accident")  # fmt: skip
        res["code"]["coding"].insert(0, {"system": SNOMED, "code": snomed[0], "display": snomed[1]})
        res["category"][0] = _cc(
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "problem-list-item",
            "Problem List Item",
        )
        return res

    def _procedure(
        self, pid: str, prid: str, enc_id: str, day: int, code: tuple[str, str]
    ) -> Resource:
        return {
            "resourceType": "Procedure",
            "id": prid,
            "status": "completed",
            "code": _cc(SNOMED, code[0], code[1]),
            "subject": _ref("Patient", pid),
            "encounter": _ref("Encounter", enc_id),
            "performedDateTime": iso(self.ref, day) + "T11:00:00Z",
        }


def follow_up_rows(statuses: list[tuple[str, FollowUp]]) -> list[list[Any]]:
    """``truth/follow_up.csv`` rows: patient_id, status, last_day, deceased."""
    return [[pid, f.status, f.last_day, f.deceased or ""] for pid, f in statuses]
