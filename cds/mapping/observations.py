"""Observations -> numeric features (LOINC table, UCUM conversion, window, plausibility).

Per feature of ``cds/data/features.csv`` the latest value wins among Observations that

1. are ``final``, ``amended`` or ``corrected`` (others are not results yet, or were
   withdrawn),
2. carry one of the feature's LOINC codes (on the Observation or on a component, so the
   blood-pressure panel's systolic and diastolic components count),
3. are dated within ``window_days`` before the as-of date (later ones are ignored, so a
   past as-of date never sees the future),
4. have a unit the table knows for that LOINC code (``unit_synonyms.csv`` first turns
   ``mmHg``-style spellings into UCUM; otherwise the value is dropped with a warning that
   names the Observation and the unit), and
5. fall inside the plausibility range after conversion (otherwise dropped with a warning).

NYHA class (LOINC 88020-3) is read from valueCodeableConcept (``nyha.csv``), valueInteger,
valueQuantity or valueString ("III", "Class 3", "NYHA II").
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.observation import Observation

from cds.clinical_tables import FeatureSpec, loinc_index, nyha_answers, unit_synonyms
from cds.mapping._dates import sort_key, to_day
from cds.mapping._types import FeatureValue

LOINC = "http://loinc.org"
#: code systems read as LOINC (the URL, its OID form, or no system at all)
LOINC_SYSTEMS = frozenset({LOINC, "urn:oid:2.16.840.1.113883.6.1", None})
UCUM = "http://unitsofmeasure.org"
ACCEPTED_STATUS = frozenset({"final", "amended", "corrected"})
NYHA_FEATURE = "nyha_class"
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "1": 1, "2": 2, "3": 3, "4": 4}
_NYHA_TEXT = re.compile(r"(?:^|[^a-z0-9])(iv|iii|ii|i|[1-4])(?:$|[^a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class _Candidate:
    value: FeatureValue
    order: tuple[str, str]


def _loinc_codes(code: Any) -> list[str]:
    out = []
    for c in getattr(code, "coding", None) or []:
        if c.code and c.system in LOINC_SYSTEMS:
            out.append(str(c.code))
    return out


def effective_day(obs: Observation) -> tuple[dt.date | None, str]:
    """Clinical day of an Observation and a chronological sort key."""
    raw: Any = obs.effectiveDateTime or obs.effectiveInstant
    if raw is None and obs.effectivePeriod is not None:
        raw = obs.effectivePeriod.end or obs.effectivePeriod.start
    if raw is None:
        raw = obs.issued
    return to_day(raw), sort_key(raw)


def _is_dimensionless(unit: str) -> bool:
    return unit == "1" or (unit.startswith("{") and unit.endswith("}"))


def unit_factor(spec: FeatureSpec, loinc: str, written: list[str]) -> tuple[float, str] | None:
    """Factor from the first known unit among ``written`` to the canonical unit."""
    synonyms = unit_synonyms()
    lower_syn = {k.lower(): v for k, v in synonyms.items()}
    for unit in written:
        for cand in (unit, synonyms.get(unit), lower_syn.get(unit.lower())):
            if cand is None:
                continue
            f = spec.factor(loinc, cand)
            if f is not None:
                return f, unit
        # a case-only difference ("mg/dl"), when it points at a single factor
        factors = {f for c, u, f in spec.conversions if c == loinc and u.lower() == unit.lower()}
        if len(factors) == 1:
            return factors.pop(), unit
    return None


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _quantity_value(
    spec: FeatureSpec, loinc: str, holder: Any, ref: str, warnings: list[str]
) -> tuple[float, str] | None:
    """(value in canonical unit, original text) from valueQuantity/valueInteger."""
    q = holder.valueQuantity
    if q is not None and q.value is not None:
        value = float(q.value)
        written = []
        if q.code and q.system in (None, UCUM):
            written.append(str(q.code))
        if q.unit:
            written.append(str(q.unit))
        if not written:
            if _is_dimensionless(spec.unit):
                return value, _fmt(value)
            warnings.append(
                f"{ref}: {spec.name} (LOINC {loinc}) has no unit; dropped (expected {spec.unit})"
            )
            return None
        found = unit_factor(spec, loinc, written)
        if found is None:
            known = ", ".join(sorted({u for c, u, _ in spec.conversions if c == loinc}))
            warnings.append(
                f"{ref}: unit '{written[0]}' is not known for {spec.name} (LOINC {loinc}); "
                f"dropped (known: {known})"
            )
            return None
        factor, unit = found
        prefix = str(q.comparator or "")
        return float(f"{value * factor:.10g}"), f"{prefix}{_fmt(value)} {unit}"
    if holder.valueInteger is not None and _is_dimensionless(spec.unit):
        return float(holder.valueInteger), str(holder.valueInteger)
    return None


def nyha_value(holder: Any) -> float | None:
    """NYHA class 1..4 from any of the value[x] forms, or None."""
    cc = holder.valueCodeableConcept
    if cc is not None:
        answers = nyha_answers()
        for c in cc.coding or []:
            cls = answers.get((str(c.system or ""), str(c.code or "")))
            if cls is not None:
                return float(cls)
        texts = [cc.text or ""] + [c.display or "" for c in cc.coding or []]
        for t in texts:
            cls = _nyha_from_text(t)
            if cls is not None:
                return float(cls)
        return None
    if holder.valueInteger is not None:
        v = int(holder.valueInteger)
        return float(v) if 1 <= v <= 4 else None
    if holder.valueQuantity is not None and holder.valueQuantity.value is not None:
        v = holder.valueQuantity.value
        return float(v) if isinstance(v, Decimal | int | float) and v == int(v) else None
    if holder.valueString:
        cls = _nyha_from_text(str(holder.valueString))
        return float(cls) if cls is not None else None
    return None


def _nyha_from_text(text: str) -> int | None:
    m = _NYHA_TEXT.search(text.strip())
    return _ROMAN[m.group(1).lower()] if m else None


def observation_features(
    observations: list[Observation],
    *,
    as_of: dt.date,
    window_days: int,
    warnings: list[str],
) -> dict[str, FeatureValue]:
    """The latest plausible value of every feature (see module docstring)."""
    index = loinc_index()
    start = as_of - dt.timedelta(days=window_days)
    best: dict[str, _Candidate] = {}
    for obs in observations:
        if str(obs.status) not in ACCEPTED_STATUS:
            continue
        ref = f"Observation/{obs.id}"
        holders: list[tuple[Any, Any]] = [(obs.code, obs)]
        holders += [(c.code, c) for c in obs.component or []]
        day: dt.date | None = None
        order = ""
        dated = False
        for code, holder in holders:
            matches = [(c, index[c]) for c in _loinc_codes(code) if c in index]
            if not matches:
                continue
            loinc, spec = matches[0]
            if not dated:
                day, order = effective_day(obs)
                dated = True
                if day is None:
                    warnings.append(f"{ref}: {spec.name} has no effective date; ignored")
            if day is None or day > as_of or day < start:
                continue
            if holder.dataAbsentReason is not None:
                continue
            n_warnings = len(warnings)
            if spec.name == NYHA_FEATURE:
                nyha = nyha_value(holder)
                got = (nyha, "") if nyha is not None else None
            else:
                got = _quantity_value(spec, loinc, holder, ref, warnings)
            if got is None or got[0] is None:
                if len(warnings) == n_warnings:
                    warnings.append(f"{ref}: {spec.name} (LOINC {loinc}) has no usable value")
                continue
            value, original = got
            converted = bool(original) and not original.endswith(f" {spec.unit}")
            if not (spec.min <= value <= spec.max):
                recorded = f" (recorded {original})" if converted else ""
                warnings.append(
                    f"{ref}: {spec.name} {_fmt(value)} {spec.unit}{recorded} is outside the "
                    f"plausible range {_fmt(spec.min)}..{_fmt(spec.max)}; dropped"
                )
                continue
            fv = FeatureValue(
                name=spec.name,
                value=value,
                unit=spec.unit,
                date=day,
                source=ref,
                original=original if converted else "",
            )
            cand = _Candidate(fv, (order, ref))
            prev = best.get(spec.name)
            if prev is None or cand.order > prev.order:
                best[spec.name] = cand
    return {name: c.value for name, c in best.items()}
