"""Conditions -> ``cond_<name>`` flags (``cds/data/conditions.csv``).

A Condition sets a flag when one of its codings is in the flag's value set
(``cds/data/valuesets/cond-<name>.json``: SNOMED CT codes with their descendants, ICD-10
codes at or below the set's codes; see :mod:`cds.terminology`), and it counts as present
on the as-of date:

- clinicalStatus is active, recurrence or relapse (absent counts as active, since many
  problem lists leave it out), and the verificationStatus is not entered-in-error or
  refuted;
- its onset (or recorded date) is not after the as-of date.

Every flag is in the model input: 1.0 when some Condition sets it, else 0.0.  A present
Condition coded in SNOMED CT or ICD-10 whose codes no value set holds is listed as not
recognised (``Condition/<id>: system|code``), never dropped silently.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.condition import Condition

from cds.clinical_tables import ConditionSpec, condition_specs
from cds.mapping._dates import to_day
from cds.mapping._types import FeatureValue
from cds.terminology import ICD10_SYSTEMS, SNOMED, active

__all__ = ["ICD10_SYSTEMS", "SNOMED", "condition_flags", "condition_present", "matching_specs"]

ACTIVE = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"entered-in-error", "refuted"})


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


def _codings(cond: Condition) -> list[tuple[str, str]]:
    codings = (cond.code.coding or []) if cond.code else []
    return [(str(c.system or ""), str(c.code)) for c in codings if c.code]


def matching_specs(cond: Condition, unrecognised: list[str] | None = None) -> list[ConditionSpec]:
    """Table rows whose value sets hold one of the Condition's codes; when none does and
    a code is SNOMED CT or ICD-10, ``Condition/<id>: system|code`` goes to
    ``unrecognised``."""
    terminology = active()
    names: set[str] = set()
    unknown: list[str] = []
    for system, code in _codings(cond):
        found = terminology.names_for(system, code)
        if found is None:
            continue
        hits = {n for n in found if n.startswith("cond_")}
        if hits:
            names |= hits
        else:
            unknown.append(f"{system}|{code}")
    if not names and unknown and unrecognised is not None:
        unrecognised.append(f"Condition/{cond.id}: {', '.join(unknown)}")
    return [spec for spec in condition_specs() if f"cond_{spec.name}" in names]


def condition_flags(
    conditions: list[Condition], *, as_of: dt.date, unrecognised: list[str] | None = None
) -> tuple[dict[str, float], dict[str, FeatureValue]]:
    """(every flag as 0/1, the set flags with their source Condition); present Conditions
    whose codes no value set holds go to ``unrecognised``."""
    found: dict[str, FeatureValue] = {}
    for cond in conditions:
        if not condition_present(cond, as_of):
            continue
        day = to_day(cond.onsetDateTime) or to_day(cond.recordedDate)
        for spec in matching_specs(cond, unrecognised):
            name = f"cond_{spec.name}"
            prev = found.get(name)
            # keep the earliest known onset as the flag's date
            if prev is None or (day and (prev.date is None or day < prev.date)):
                found[name] = FeatureValue(name, 1.0, "", day, f"Condition/{cond.id}")
    flags = {f"cond_{s.name}": 1.0 if f"cond_{s.name}" in found else 0.0 for s in condition_specs()}
    return flags, found
