"""Conditions -> ``cond_<name>`` flags (``cds/data/conditions.csv``).

A Condition sets a flag when one of its codings is the table's SNOMED CT code, or an
ICD-10 code at or below one of the table's ICD-10 codes, and it counts as present on the
as-of date:

- clinicalStatus is active, recurrence or relapse (absent counts as active, since many
  problem lists leave it out), and the verificationStatus is not entered-in-error or
  refuted;
- its onset (or recorded date) is not after the as-of date.

Every flag is in the model input: 1.0 when some Condition sets it, else 0.0.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.condition import Condition

from cds.clinical_tables import ConditionSpec, condition_specs
from cds.mapping._dates import to_day
from cds.mapping._types import FeatureValue

SNOMED = "http://snomed.info/sct"
ACTIVE = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"entered-in-error", "refuted"})
#: code systems read as ICD-10 (WHO, ICD-10-CM, national modifications)
ICD10_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10-gm",
        "http://hl7.org/fhir/sid/icd-10-ca",
        "http://hl7.org/fhir/sid/icd-10-nl",
        "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
        "urn:oid:2.16.840.1.113883.6.90",
        "urn:oid:2.16.840.1.113883.6.3",
    }
)


def _codes(cc: Any) -> set[str]:
    return {str(c.code) for c in (getattr(cc, "coding", None) or []) if c.code}


def condition_present(cond: Condition, as_of: dt.date) -> bool:
    """Whether the Condition counts on ``as_of`` (status and dates, not codes)."""
    if _codes(cond.verificationStatus) & EXCLUDED_VERIFICATION:
        return False
    status = _codes(cond.clinicalStatus)
    if status and not status & ACTIVE:
        return False
    onset = to_day(cond.onsetDateTime) or (
        to_day(cond.onsetPeriod.start) if cond.onsetPeriod else None
    )
    day = onset or to_day(cond.recordedDate)
    return day is None or day <= as_of


def matching_specs(cond: Condition) -> list[ConditionSpec]:
    """Table rows whose codes the Condition carries."""
    out = []
    codings = (cond.code.coding or []) if cond.code else []
    for spec in condition_specs():
        for c in codings:
            system, code = str(c.system or ""), str(c.code or "")
            if not code:
                continue
            if system == SNOMED and code in spec.snomed_codes:
                out.append(spec)
                break
            if (system in ICD10_SYSTEMS or "icd-10" in system.lower()) and spec.matches_icd10(code):
                out.append(spec)
                break
    return out


def condition_flags(
    conditions: list[Condition], *, as_of: dt.date
) -> tuple[dict[str, float], dict[str, FeatureValue]]:
    """(every flag as 0/1, the set flags with their source Condition)."""
    found: dict[str, FeatureValue] = {}
    for cond in conditions:
        if not condition_present(cond, as_of):
            continue
        day = to_day(cond.onsetDateTime) or to_day(cond.recordedDate)
        for spec in matching_specs(cond):
            name = f"cond_{spec.name}"
            prev = found.get(name)
            # keep the earliest known onset as the flag's date
            if prev is None or (day and (prev.date is None or day < prev.date)):
                found[name] = FeatureValue(name, 1.0, "", day, f"Condition/{cond.id}")
    flags = {f"cond_{s.name}": 1.0 if f"cond_{s.name}" in found else 0.0 for s in condition_specs()}
    return flags, found
