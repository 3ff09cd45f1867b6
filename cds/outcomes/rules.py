"""One patient's 1-year outcomes from FHIR resources (plain JSON), by the code tables.

The definitions (``docs/outcomes.md`` gives them with their sources; the code lists are
``cds/data/outcome_codes.csv``):

* **death**: ``Patient.deceasedDateTime`` in the window (as-of date, as-of + 365 days];
* **CV death**: a death whose cause (Observation LOINC 69453-9, an ICD-10 value) is in
  chapter IX (I00-I99); a death without a recorded cause is presumed cardiovascular
  (Hicks et al. 2018);
* **rehospitalization**: an unplanned inpatient admission (Encounter class IMP, ACUTE or
  NONAC) starting in the window, on or before the death date; a stay that continues a
  transfer (admit source ``hosp-trans`` within a day of another stay's end) is part of
  the first stay; a planned admission (priority ``EL``, an always-planned principal
  diagnosis, or a potentially planned procedure without an acute principal diagnosis:
  CMS Planned Readmission Algorithm v4.0) is not counted;
* **cardiology rehospitalization**: such an admission whose principal diagnosis (the
  first stay's of a transfer chain) is a heart disease (I00-I52);
* **MACCE**: CV death, a heart-failure admission (principal diagnosis), a myocardial
  infarction or a stroke (a Condition with onset, or an admission's principal diagnosis)
  in the window.

Censoring: follow-up ends at the death date or at the last contact (an Encounter,
Observation or Procedure dated after the as-of date and no later than the data cut).  An
outcome without an event is 0 only when the patient was followed the whole year, or
died in it (death ends the other outcomes); otherwise it is censored (None).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from model.types import OUTCOMES

Json = dict[str, Any]
WINDOW_DAYS = 365
ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"})
SNOMED = "http://snomed.info/sct"
CAUSE_OF_DEATH = "69453-9"
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
SKIP_STATUS = frozenset({"cancelled", "entered-in-error", "planned"})
MACCE_CAUSES = ("cardiovascular death", "heart failure hospitalization",
                "myocardial infarction", "stroke")  # fmt: skip


@dataclass(frozen=True)
class CodeRow:
    """One row of ``outcome_codes.csv``."""

    list: str
    system: str
    code: str
    category: str
    label: str
    source: str


@cache
def code_table() -> tuple[CodeRow, ...]:
    """Every row of ``cds/data/outcome_codes.csv``."""
    text = resources.files("cds.data").joinpath("outcome_codes.csv").read_text("utf-8")
    return tuple(CodeRow(**r) for r in csv.DictReader(text.splitlines()))


def _norm(code: str) -> str:
    return code.strip().upper()


def in_list(name: str, codings: list[Json]) -> CodeRow | None:
    """The table row of list ``name`` that one of ``codings`` falls under (ICD-10 by
    prefix: ``I50`` covers ``I50.23``; SNOMED CT by exact code), or None."""
    rows = [r for r in code_table() if r.list == name]
    best: CodeRow | None = None
    for c in codings:
        system, code = c.get("system"), c.get("code")
        if not isinstance(code, str):
            continue
        for r in rows:
            if r.system == "icd10" and system in ICD10_SYSTEMS:
                if _norm(code).startswith(_norm(r.code)) and (
                    best is None or len(r.code) > len(best.code)
                ):
                    best = r
            elif r.system == "snomed" and system == SNOMED and code == r.code:
                return r
    return best


def _codings(cc: Any) -> list[Json]:
    if not isinstance(cc, dict):
        return []
    return [c for c in cc.get("coding") or [] if isinstance(c, dict)]


def parse_day(raw: Any) -> dt.date | None:
    """The calendar day of a FHIR date/dateTime (``YYYY-MM-DD...``), or None."""
    if not isinstance(raw, str) or len(raw) < 10:
        return None
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        return None


@dataclass
class Stay:
    """An inpatient encounter (one admission, or one leg of a transfer chain)."""

    id: str
    start: dt.date
    end: dt.date | None
    codings: list[Json]
    planned_reason: str = ""
    transfer_in: bool = False
    transfer_of: str = ""


@dataclass
class PatientOutcome:
    """Derived outcomes of one patient.

    Args:
        patient_id: the Patient id.
        labels: outcome -> 1, 0 or None (censored).
        cv_death_cause / macce_cause: cause categories ("" when none).
        rehosp_days: days from the as-of date to the first counted admission, or None.
        followed_days: days of observed follow-up (death date or last contact).
        censor_reason: why outcomes are censored ("" when none is).
        rules: rule name -> times it fired for this patient.
        warnings: resource-level problems, each naming the resource.
    """

    patient_id: str
    labels: dict[str, int | None] = field(default_factory=dict)
    cv_death_cause: str = ""
    macce_cause: str = ""
    rehosp_days: int | None = None
    followed_days: int = 0
    censor_reason: str = ""
    rules: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def hit(self, rule: str) -> None:
        self.rules[rule] = self.rules.get(rule, 0) + 1


def _ref_id(ref: Any, kind: str) -> str | None:
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        head, _, rid = ref["reference"].rpartition("/")
        if head.endswith(kind) and rid:
            return rid
    return None


def _principal_codings(enc: Json, conditions: dict[str, Json]) -> list[Json]:
    """Codings of the encounter's principal diagnosis: ``diagnosis`` with the lowest rank
    (its Condition's code), else ``reasonCode``, else Conditions pointing at it."""
    diags = [d for d in enc.get("diagnosis") or [] if isinstance(d, dict)]
    diags.sort(key=lambda d: d["rank"] if isinstance(d.get("rank"), int) else 99)
    for d in diags:
        cid = _ref_id(d.get("condition"), "Condition")
        if cid and cid in conditions:
            return _codings(conditions[cid].get("code"))
    for rc in enc.get("reasonCode") or []:
        found = _codings(rc)
        if found:
            return found
    for cond in conditions.values():
        if _ref_id(cond.get("encounter"), "Encounter") == enc.get("id"):
            return _codings(cond.get("code"))
    return []


def _stays(
    encounters: list[Json], conditions: dict[str, Json], procedures: list[Json], out: PatientOutcome
) -> list[Stay]:
    procs_by_enc: dict[str, list[Json]] = {}
    for p in procedures:
        eid = _ref_id(p.get("encounter"), "Encounter")
        if eid:
            procs_by_enc.setdefault(eid, []).extend(_codings(p.get("code")))
    stays = []
    for enc in encounters:
        eid = str(enc.get("id") or "?")
        cls = enc.get("class") or {}
        if not isinstance(cls, dict) or cls.get("code") not in INPATIENT_CLASSES:
            continue
        if enc.get("status") in SKIP_STATUS:
            continue
        period = enc.get("period")
        start = parse_day(period.get("start")) if isinstance(period, dict) else None
        if start is None:
            out.warnings.append(f"Encounter/{eid}: inpatient encounter without a valid "
                                "period.start; not counted")  # fmt: skip
            continue
        end = parse_day(period.get("end")) if isinstance(period, dict) else None
        stay = Stay(eid, start, end, _principal_codings(enc, conditions))
        priority = {c.get("code") for c in _codings(enc.get("priority"))}
        hosp = enc.get("hospitalization") if isinstance(enc.get("hospitalization"), dict) else {}
        admit = {c.get("code") for c in _codings((hosp or {}).get("admitSource"))}
        stay.transfer_in = "hosp-trans" in admit
        if "EL" in priority:
            stay.planned_reason = "planned: elective priority"
        elif in_list("planned_dx", stay.codings):
            stay.planned_reason = "planned: always-planned diagnosis"
        elif in_list("planned_procedure", procs_by_enc.get(eid, [])) and not in_list(
            "acute_dx", stay.codings
        ):
            stay.planned_reason = "planned: potentially planned procedure, non-acute diagnosis"
        stays.append(stay)
    stays.sort(key=lambda s: (s.start, s.id))
    for s in stays:  # a transfer continues the stay that ended within a day before it
        if not s.transfer_in:
            continue
        for prev in stays:
            if prev is s or prev.end is None or prev.start > s.start:
                continue
            if abs((s.start - prev.end).days) <= 1:
                s.transfer_of = prev.transfer_of or prev.id
                break
    return stays


def derive_patient(
    patient: Json,
    resources_by_type: dict[str, list[Json]],
    as_of: dt.date,
    data_cut: dt.date,
) -> PatientOutcome:
    """The five outcomes of one patient (see the module docstring)."""
    pid = str(patient.get("id") or "?")
    out = PatientOutcome(pid)
    window_end = as_of + dt.timedelta(days=WINDOW_DAYS)
    horizon = min(window_end, data_cut)

    def in_window(day: dt.date | None) -> bool:
        return day is not None and as_of < day <= window_end and day <= data_cut

    # death
    death: dt.date | None = None
    raw = patient.get("deceasedDateTime")
    if raw is not None:
        death = parse_day(raw)
        if death is None:
            out.warnings.append(f"Patient/{pid}: deceasedDateTime {str(raw)[:40]!r} is not a "
                                "date; death not counted")  # fmt: skip
    elif patient.get("deceasedBoolean") is True:
        out.warnings.append(f"Patient/{pid}: deceasedBoolean without a date; death not placed")
    died = in_window(death)
    conditions = {
        str(c.get("id")): c for c in resources_by_type.get("Condition", []) if c.get("id")
    }
    encounters = resources_by_type.get("Encounter", [])
    observations = resources_by_type.get("Observation", [])
    procedures = resources_by_type.get("Procedure", [])

    # follow-up reached
    last = as_of
    for enc in encounters:
        period = enc.get("period") if isinstance(enc.get("period"), dict) else {}
        for key in ("start", "end"):
            d = parse_day((period or {}).get(key))
            if d is not None and as_of < d <= data_cut and d > last:
                last = d
    for obs in observations:
        d = parse_day(obs.get("effectiveDateTime"))
        if d is not None and as_of < d <= data_cut and d > last:
            last = d
    for proc in procedures:
        d = parse_day(proc.get("performedDateTime"))
        if d is not None and as_of < d <= data_cut and d > last:
            last = d
    if death is not None and as_of < death <= data_cut:
        last = max(last, death)
    out.followed_days = (last - as_of).days
    complete = died or last >= window_end

    labels: dict[str, int | None] = {}
    labels["death"] = 1 if died else 0
    cv = False
    if died:
        out.hit("death")
        cause_rows = []
        for obs in observations:
            code = {c.get("code") for c in _codings(obs.get("code"))}
            if CAUSE_OF_DEATH in code:
                cause_rows.append(_codings(obs.get("valueCodeableConcept")))
        if cause_rows:
            cv = in_list("cv_death", cause_rows[0]) is not None
            cat = in_list("cv_death_cause", cause_rows[0])
            out.hit("cv_death: coded cause" if cv else "non-cv death: coded cause")
            if cv:
                out.cv_death_cause = cat.category if cat else "other cardiovascular"
        else:
            cv = True
            out.cv_death_cause = "undetermined (presumed cardiovascular)"
            out.hit("cv_death: no recorded cause, presumed cardiovascular")
    labels["cv_death"] = 1 if cv else 0

    stays = _stays(encounters, conditions, procedures, out)
    first_rehosp: Stay | None = None
    card = False
    macce_events: list[tuple[dt.date, str]] = []
    if cv and death is not None:
        macce_events.append((death, "cardiovascular death"))
    for s in stays:
        if not in_window(s.start) or (death is not None and s.start > death):
            continue
        if s.planned_reason:
            out.hit(f"excluded: {s.planned_reason}")
            continue
        if s.transfer_of:
            out.hit("merged: transfer continues an earlier stay")
            continue
        out.hit("admission counted")
        if first_rehosp is None:
            first_rehosp = s
        if in_list("cardiology", s.codings):
            card = True
        if in_list("hf", s.codings):
            macce_events.append((s.start, "heart failure hospitalization"))
        if in_list("mi", s.codings):
            macce_events.append((s.start, "myocardial infarction"))
        if in_list("stroke", s.codings):
            macce_events.append((s.start, "stroke"))
    for cond in conditions.values():
        onset = parse_day(cond.get("onsetDateTime"))
        if not in_window(onset) or (death is not None and onset and onset > death):
            continue
        codings = _codings(cond.get("code"))
        for kind, name in (("mi", "myocardial infarction"), ("stroke", "stroke")):
            if in_list(kind, codings) and onset is not None:
                macce_events.append((onset, name))
    labels["rehospitalization"] = 1 if first_rehosp else 0
    labels["cardiology_rehospitalization"] = 1 if card else 0
    if first_rehosp is not None:
        out.rehosp_days = (first_rehosp.start - as_of).days
    labels["macce"] = 1 if macce_events else 0
    if macce_events:
        macce_events.sort()
        out.macce_cause = macce_events[0][1]
        out.hit(f"macce: {out.macce_cause}")
    if not complete:
        reason = (
            f"data cut {data_cut} before the year ends"
            if data_cut < window_end and last >= horizon
            else f"follow-up {out.followed_days} days, no contact after {last}"
        )
        for o in OUTCOMES:
            if not labels[o]:
                labels[o] = None
        if any(v is None for v in labels.values()):
            out.censor_reason = reason
    out.labels = labels
    return out
