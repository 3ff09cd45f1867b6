"""MedicationRequest / MedicationStatement -> ``med_<class>`` flags and a medication text.

A medication counts on the as-of date when

- a MedicationRequest is ``active`` or ``on-hold`` and was authored on or before the
  as-of date, or is ``completed``/``stopped`` with a dispense validity period that covers
  the as-of date;
- a MedicationStatement is ``active`` or ``intended`` and its effective date/period
  started on or before the as-of date, or is ``completed``/``stopped`` with an effective
  period that covers it.

Its name is the CodeableConcept text or coding displays (RxNorm first), from
``medicationCodeableConcept``, a contained Medication, or a referenced Medication
resource (its code, else its ingredients).  The drug classes (``cds/data/medications.csv``)
come, in this order, from

1. the codes: an RxNorm code (ingredient, SCD, SBD) or an ATC code at or below a class's
   ATC group held by the class's value set (``cds/data/valuesets/med-<class>.json``);
2. only when no code gave a class: the class's ingredient keywords in the name
   (case-insensitive).

RxNorm and ATC codes that no value set holds are listed as not recognised
(``MedicationRequest/<id>: system|code``).  Every class flag is in the model input: 1.0
or 0.0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement

from cds.clinical_tables import drug_class_specs
from cds.mapping._dates import to_day
from cds.mapping._types import FeatureValue
from cds.terminology import RXNORM, active

__all__ = ["RXNORM", "MedicationUse", "classify", "medication_flags", "medications_in_use"]


@dataclass(frozen=True)
class MedicationUse:
    """One medication in use on the as-of date."""

    ref: str
    name: str
    dose: str
    date: dt.date | None
    classes: tuple[str, ...]

    @property
    def line(self) -> str:
        """``name (dose)``; just the dose text when it already starts with the name."""
        if not self.dose or self.dose == self.name:
            return self.name
        if self.dose.lower().startswith(self.name.lower()):
            return self.dose
        return f"{self.name} ({self.dose})"


def _cc_name(cc: Any) -> str:
    if cc is None:
        return ""
    if cc.text:
        return str(cc.text)
    codings = sorted(cc.coding or [], key=lambda c: c.system != RXNORM)
    for c in codings:
        if c.display:
            return str(c.display)
    return ""


def _referenced(res: Any, medications: dict[str, Any]) -> Any:
    """The Medication the resource points at (contained or by reference), or None."""
    ref = res.medicationReference
    if ref is None:
        return None
    target = str(ref.reference or "")
    if target.startswith("#"):
        for c in res.contained or []:
            if c.get_resource_type() == "Medication" and c.id == target[1:]:
                return c
        return None
    return medications.get(target.split("/_history/")[0])


def _codings(res: Any, medications: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, code) of the medication concept, its Medication and ingredients."""
    ccs = [res.medicationCodeableConcept]
    med = _referenced(res, medications)
    if med is not None:
        ccs.append(med.code)
        ccs += [i.itemCodeableConcept for i in med.ingredient or []]
    out = []
    for cc in ccs:
        for c in (cc.coding or []) if cc is not None else []:
            if c.code:
                out.append((str(c.system or ""), str(c.code)))
    return out


def _medication_name(res: Any, medications: dict[str, Any]) -> str:
    name = _cc_name(res.medicationCodeableConcept)
    if name:
        return name
    ref = res.medicationReference
    if ref is None:
        return ""
    med = _referenced(res, medications)
    if med is not None:
        name = _cc_name(med.code)
        if not name:
            parts = [_cc_name(i.itemCodeableConcept) for i in med.ingredient or []]
            name = " / ".join(p for p in parts if p)
        if name:
            return name
    return str(ref.display or "")


def _covers(period: Any, as_of: dt.date) -> bool:
    if period is None:
        return False
    start, end = to_day(period.start), to_day(period.end)
    return (start is None or start <= as_of) and (end is not None and as_of <= end)


def _request_in_use(mr: MedicationRequest, as_of: dt.date) -> tuple[bool, dt.date | None]:
    day = to_day(mr.authoredOn)
    status = str(mr.status)
    if status in ("active", "on-hold"):
        return day is None or day <= as_of, day
    if status in ("completed", "stopped"):
        dr = mr.dispenseRequest
        return _covers(dr.validityPeriod if dr else None, as_of), day
    return False, day


def _statement_in_use(ms: MedicationStatement, as_of: dt.date) -> tuple[bool, dt.date | None]:
    start = to_day(ms.effectiveDateTime) or (
        to_day(ms.effectivePeriod.start) if ms.effectivePeriod else None
    )
    status = str(ms.status)
    if status in ("active", "intended"):
        end = to_day(ms.effectivePeriod.end) if ms.effectivePeriod else None
        ok = (start is None or start <= as_of) and (end is None or as_of <= end)
        return ok, start or to_day(ms.dateAsserted)
    if status in ("completed", "stopped"):
        return _covers(ms.effectivePeriod, as_of), start
    return False, start


def _dose(dosages: Any) -> str:
    for d in dosages or []:
        if d.text:
            return str(d.text)
    return ""


def classify(name: str) -> tuple[str, ...]:
    """Classes by ingredient keywords in a medication name (the last resort)."""
    low = name.lower()
    return tuple(s.name for s in drug_class_specs() if any(k in low for k in s.keywords))


def classify_codes(codings: list[tuple[str, str]]) -> tuple[tuple[str, ...], list[str]]:
    """(classes from RxNorm/ATC codes, ``system|code`` of those no value set holds)."""
    terminology = active()
    names: set[str] = set()
    unknown = []
    for system, code in codings:
        found = terminology.names_for(system, code)
        if found is None:
            continue
        hits = {n[4:] for n in found if n.startswith("med_")}
        if hits:
            names |= hits
        else:
            unknown.append(f"{system}|{code}")
    return tuple(s.name for s in drug_class_specs() if s.name in names), unknown


def medications_in_use(
    requests: list[MedicationRequest],
    statements: list[MedicationStatement],
    medications: dict[str, Any],
    *,
    as_of: dt.date,
    warnings: list[str],
    unrecognised: list[str] | None = None,
) -> list[MedicationUse]:
    """Medications in use on ``as_of`` (one per distinct name, newest source kept); codes
    no value set holds go to ``unrecognised``."""
    uses: dict[str, MedicationUse] = {}
    items: list[tuple[str, Any, tuple[bool, dt.date | None], str]] = []
    for mr in requests:
        items.append(
            (
                f"MedicationRequest/{mr.id}",
                mr,
                _request_in_use(mr, as_of),
                _dose(mr.dosageInstruction),
            )
        )
    for ms in statements:
        items.append(
            (f"MedicationStatement/{ms.id}", ms, _statement_in_use(ms, as_of), _dose(ms.dosage))
        )
    for ref, res, (in_use, day), dose in items:
        if not in_use:
            continue
        name = _medication_name(res, medications)
        if not name:
            warnings.append(f"{ref}: medication has no name or display; ignored")
            continue
        classes, unknown = classify_codes(_codings(res, medications))
        if not classes:
            classes = classify(name)
            if unknown and unrecognised is not None:
                how = "; classed by its name" if classes else ""
                unrecognised.append(f"{ref}: {', '.join(unknown)}{how}")
        key = name.lower()
        prev = uses.get(key)
        if prev is not None and (prev.date or dt.date.min) >= (day or dt.date.min):
            continue
        uses[key] = MedicationUse(ref, name, dose, day, classes)
    return sorted(uses.values(), key=lambda u: u.name.lower())


def medication_flags(
    uses: list[MedicationUse],
) -> tuple[dict[str, float], dict[str, FeatureValue]]:
    """(every class flag as 0/1, the set flags with their source)."""
    found: dict[str, FeatureValue] = {}
    for use in uses:
        for cls in use.classes:
            name = f"med_{cls}"
            if name not in found:
                found[name] = FeatureValue(name, 1.0, "", use.date, use.ref)
    flags = {f"med_{s.name}": 1.0 if f"med_{s.name}" in found else 0.0 for s in drug_class_specs()}
    return flags, found
