"""The clinical knowledge tables in ``cds/data/`` as typed objects.

``features.csv``: one row per numeric model feature: its preferred LOINC code and
canonical UCUM unit, the plausibility range (in the canonical unit), and alternates.
An alternate is ``unit:factor`` (same LOINC, another unit) or ``LOINC@unit:factor``
(another LOINC code for the same quantity); ``value_in_canonical = value * factor``.
``seed_column``/``seed_factor`` give the seed study's CSV column and the factor from its
unit to the canonical one.

``conditions.csv``: condition flags with their SNOMED CT roots and ICD-10(-CM) categories.
The codes that set a flag are those of its value set (``cds/data/valuesets/``, built from
these roots and published value sets by ``tools/build_valuesets.py``; see
:mod:`cds.terminology`); the first SNOMED CT code is the one the synthetic cohort writes.

``medications.csv``: drug classes with their WHO ATC groups (in the class's value set
with its RxNorm codes) and ingredient keywords (matched case-insensitively in the
medication's name when no code gives a class).

``nyha.csv``: coded answers (LOINC answer list of 88020-3, SNOMED CT findings) -> NYHA
class 1..4.

``panels.csv``: LOINC panels whose components carry feature codes (the blood-pressure
panel 85354-9 with 8480-6/8462-4); searches ask for the panel codes too, since a search
by ``code`` does not look into components.

``unit_synonyms.csv``: unit spellings seen in the wild (``mmHg``, ``10^9/L``, ``µmol/L``)
-> the UCUM code the feature table uses.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    label: str
    group: str
    loinc: str
    unit: str
    #: (loinc, unit) -> factor to the canonical unit
    conversions: tuple[tuple[str, str, float], ...]
    min: float
    max: float
    seed_column: str
    seed_factor: float

    def factor(self, loinc: str, unit: str | None) -> float | None:
        """Factor from ``unit`` (under ``loinc``) to the canonical unit, or None if unknown."""
        unit = (unit or "").strip()
        for code, u, f in self.conversions:
            if code == loinc and u == unit:
                return f
        return None

    @property
    def loinc_codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for c, _, _ in self.conversions))


@dataclass(frozen=True)
class ConditionSpec:
    """A condition flag: its SNOMED CT codes (the first is the one written, e.g. by the
    synthetic cohort; every one is recognised) and ICD-10 code prefixes."""

    name: str
    label: str
    snomed_codes: tuple[str, ...]
    icd10: tuple[str, ...]
    seed_column: str

    @property
    def snomed(self) -> str:
        """The SNOMED CT code written for this condition ("" when none)."""
        return self.snomed_codes[0] if self.snomed_codes else ""

    def matches_icd10(self, code: str) -> bool:
        """``code`` is one of the table's codes or lies below one (dots ignored, so
        ``I4891`` and ``I48.91`` both match ``I48``)."""
        have = code.replace(".", "").strip().upper()
        return bool(have) and any(have.startswith(c.replace(".", "").upper()) for c in self.icd10)


@dataclass(frozen=True)
class DrugClassSpec:
    name: str
    label: str
    seed_label: str
    keywords: tuple[str, ...]
    atc: tuple[str, ...] = ()


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("cds.data").joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def feature_specs() -> tuple[FeatureSpec, ...]:
    out = []
    for r in _rows("features.csv"):
        conv: list[tuple[str, str, float]] = [(r["loinc"], r["unit"], 1.0)]
        for alt in filter(None, r["alternates"].split(";")):
            code_unit, factor = alt.rsplit(":", 1)
            code, unit = code_unit.split("@", 1) if "@" in code_unit else (r["loinc"], code_unit)
            conv.append((code, unit, float(factor)))
        out.append(
            FeatureSpec(
                name=r["feature"],
                label=r["label"],
                group=r["group"],
                loinc=r["loinc"],
                unit=r["unit"],
                conversions=tuple(conv),
                min=float(r["min"]),
                max=float(r["max"]),
                seed_column=r["seed_column"],
                seed_factor=float(r["seed_factor"]),
            )
        )
    return tuple(out)


@cache
def condition_specs() -> tuple[ConditionSpec, ...]:
    return tuple(
        ConditionSpec(
            name=r["feature"],
            label=r["label"],
            snomed_codes=tuple(filter(None, r["snomed"].split(";"))),
            icd10=tuple(filter(None, r["icd10"].split(";"))),
            seed_column=r["seed_column"],
        )
        for r in _rows("conditions.csv")
    )


@cache
def drug_class_specs() -> tuple[DrugClassSpec, ...]:
    return tuple(
        DrugClassSpec(
            name=r["drug_class"],
            label=r["label"],
            seed_label=r["seed_label"],
            keywords=tuple(k.lower() for k in r["keywords"].split(";") if k),
            atc=tuple(filter(None, r["atc"].split(";"))),
        )
        for r in _rows("medications.csv")
    )


@cache
def loinc_index() -> dict[str, FeatureSpec]:
    """Every LOINC code that maps to a feature."""
    return {code: spec for spec in feature_specs() for code in spec.loinc_codes}


@cache
def panel_codes() -> dict[str, tuple[str, ...]]:
    """Panel LOINC code -> the component LOINC codes it carries."""
    return {r["panel"]: tuple(r["components"].split(";")) for r in _rows("panels.csv")}


@cache
def observation_search_codes() -> tuple[str, ...]:
    """Every LOINC code an Observation search asks for: the features' codes and the
    panels that carry them as components (sorted)."""
    return tuple(sorted(set(loinc_index()) | set(panel_codes())))


@cache
def nyha_answers() -> dict[tuple[str, str], int]:
    """(system, code) -> NYHA class 1..4."""
    return {(r["system"], r["code"]): int(r["nyha_class"]) for r in _rows("nyha.csv")}


@cache
def unit_synonyms() -> dict[str, str]:
    """Written unit -> UCUM code of the feature table."""
    return {r["written"]: r["ucum"] for r in _rows("unit_synonyms.csv")}
