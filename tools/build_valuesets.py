"""Build ``cds/data/valuesets/*.json`` from the feature tables and published value sets.

Usage::

    python tools/build_valuesets.py SOURCE_DIR [SOURCE_DIR ...]

Each SOURCE_DIR is a checkout of a public eCQM content repository of the Clinical Quality
Framework (CC0): ``cqframework/ecqm-content-qicore-2025`` and
``cqframework/ecqm-content-r4-2021``.  Their ``input/vocabulary/valueset/external/``
folders hold VSAC value sets with their expansions (NLM Value Set Authority Center).

Per condition flag (``cds/data/conditions.csv``) the value set holds

- the table's SNOMED CT codes as ``is-a`` roots in ``compose`` (a terminology server
  expands them to every descendant) and as concepts of the expansion;
- the table's ICD-10 codes (a category stands for every code below it);
- the codes of the VSAC value sets named in ``CONDITION_SOURCES`` below, optionally only
  those whose display matches a pattern (a subset of a broader published set), ICD-9-CM
  left out.

Per medication class (``cds/data/medications.csv``) the value set holds the class's WHO
ATC codes and the RxNorm codes (ingredients, SCD, SBD, packs) of the VSAC medication
value sets in ``RXNORM_SOURCES`` whose display names one of the class's ingredients.

The output is deterministic (sorted codes, fixed timestamp); rerun after a table change
and commit the JSON.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "cds" / "data"
OUT = DATA / "valuesets"
VERSION = "2026.1"
TIMESTAMP = "2026-12-05T00:00:00Z"
CANONICAL = "urn:mprtm-cds:fhir:ValueSet:"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
VSAC = "http://cts.nlm.nih.gov/fhir/ValueSet/"

#: flag -> [(VSAC OID, display pattern or None for the whole set)]
CONDITION_SOURCES: dict[str, list[tuple[str, str | None]]] = {
    "adhf": [("2.16.840.1.113883.3.526.3.376", r"\bacute\b|decompensated")],
    "heart_failure": [("2.16.840.1.113883.3.526.3.376", None)],
    "hfref": [
        (
            "2.16.840.1.113883.3.526.3.376",
            r"^(?!.*diastolic).*(systolic|reduced ejection fraction)",
        )
    ],
    "hfpef": [
        (
            "2.16.840.1.113883.3.526.3.376",
            r"^(?!.*systolic).*(diastolic|normal ejection fraction)",
        )
    ],
    "hypertension": [
        (
            "2.16.840.1.113883.3.464.1003.104.12.1011",
            r"^(?!.*(pregnan|obstetric|puerper|childbirth))",
        ),
    ],
    "cad": [("2.16.840.1.113883.3.526.3.369", None)],
    "prior_mi": [("2.16.840.1.113883.3.526.3.403", None)],
    "inflammatory_disease": [
        ("2.16.840.1.113883.3.464.1003.113.12.1005", None),
        ("2.16.840.1.113883.3.464.1003.117.12.1010", None),
    ],
    "ckd": [
        ("2.16.840.1.113883.3.526.3.1002", None),
        (
            "2.16.840.1.113883.3.464.1003.109.12.1017",
            r"chronic kidney|renal disease stage|end stage",
        ),
    ],
    "cerebrovascular": [("2.16.840.1.113762.1.4.1047.44", None)],
    "smoking": [("2.16.840.1.113883.3.600.2390", None)],
    "alcohol": [("2.16.840.1.113883.3.464.1003.106.12.1001", r"alcohol")],
    "diabetes": [("2.16.840.1.113883.3.464.1003.103.12.1001", None)],
    "hyperlipidemia": [("2.16.840.1.113762.1.4.1047.100", None)],
    "liver_disease": [("2.16.840.1.113762.1.4.1047.42", None)],
    "atrial_fibrillation": [("2.16.840.1.113883.3.117.1.7.1.202", r"fibrillation")],
    "av_block": [("2.16.840.1.113883.3.526.3.367", None)],
    "pacemaker": [("2.16.840.1.113883.3.526.3.368", None)],
}

#: VSAC medication value sets whose RxNorm codes are sorted into classes by ingredient
RXNORM_SOURCES = (
    "2.16.840.1.113883.3.526.2.39",  # ACE Inhibitor or ARB or ARNI
    "2.16.840.1.113883.3.526.2.1926",  # ACE Inhibitor or ARB or ARNI Ingredient
    "2.16.840.1.113883.3.526.2.133",  # Beta Blocker Therapy
    "2.16.840.1.113883.3.526.2.1921",  # Beta Blocker Therapy Ingredient
    "2.16.840.1.113883.3.600.1476",  # Pharmacologic Therapy for Hypertension
    "2.16.840.1.113883.3.117.1.7.1.200",  # Anticoagulant Therapy
    "2.16.840.1.113762.1.4.1110.62",  # Antithrombotic Therapy
    "2.16.840.1.113883.3.117.1.7.1.232",  # Warfarin
    "2.16.840.1.113762.1.4.1110.19",  # Statin Grouper
)

#: display text of the hand-picked roots that are not in any source set above
ROOT_DISPLAYS = {
    (SNOMED, "302870006"): (
        "Hypertriglyceridemia (disorder)",
        "SNOMED CT International; as coded by Synthea's metabolic syndrome module",
    ),
}


def _vsac(dirs: list[Path]) -> dict[str, dict]:
    """OID -> the newest VSAC ValueSet (with an expansion) among the source folders."""
    found: dict[str, dict] = {}
    for d in dirs:
        for path in sorted(d.glob("input/vocabulary/valueset/external/valueset-*.json")):
            vs = json.loads(path.read_text(encoding="utf-8"))
            oid = str(vs.get("id", "")).split("-")[0]
            if not (vs.get("expansion") or {}).get("contains"):
                continue
            prev = found.get(oid)
            if prev is None or str(vs.get("version", "")) > str(prev.get("version", "")):
                vs["_repo"] = d.name
                found[oid] = vs
    return found


def _system(uri: str) -> str | None:
    if uri == SNOMED:
        return SNOMED
    if uri == ICD10CM:
        return ICD10CM
    if uri == RXNORM:
        return RXNORM
    return None  # ICD-9-CM, CPT, ... are not used


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((DATA / name).read_text(encoding="utf-8").splitlines()))


def _valueset(
    vid: str,
    name: str,
    title: str,
    description: str,
    roots: list[str],
    concepts: dict[tuple[str, str], str],
    sources: list[str],
) -> dict:
    include: list[dict] = [
        {"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": r}]}
        for r in roots
    ]
    by_system: dict[str, list[dict]] = {}
    for (system, code), display in sorted(concepts.items()):
        entry = {"code": code}
        if display:
            entry["display"] = display
        by_system.setdefault(system, []).append(entry)
    include += [{"system": s, "concept": c} for s, c in sorted(by_system.items())]
    contains = [
        {"system": s, "code": c, **({"display": d} if d else {})}
        for (s, c), d in sorted(concepts.items())
    ]
    return {
        "resourceType": "ValueSet",
        "id": vid,
        "url": CANONICAL + vid,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": "M-PRTM CDS",
        "description": description,
        "copyright": (
            "Codes from SNOMED CT (IHTSDO; use requires a SNOMED CT licence outside member "
            "countries), ICD-10-CM (CDC NCHS, public domain), ICD-10 (WHO), RxNorm (NLM, "
            "public domain subset) and the WHO ATC classification.  Published value sets "
            "from the NLM Value Set Authority Center as redistributed under CC0 by the "
            "Clinical Quality Framework eCQM content repositories."
        ),
        "compose": {"include": include},
        "expansion": {
            "identifier": f"urn:mprtm-cds:expansion:{vid}:{VERSION}",
            "timestamp": TIMESTAMP,
            "total": len(contains),
            "parameter": [{"name": "source", "valueUri": s} for s in sources],
            "contains": contains,
        },
    }


def _condition_sets(vsac: dict[str, dict]) -> list[dict]:
    out = []
    for row in _rows("conditions.csv"):
        flag = row["feature"]
        roots = [c for c in row["snomed"].split(";") if c]
        concepts: dict[tuple[str, str], str] = {}
        sources = []
        lines = [f"Codes that set `cond_{flag}` ({row['label']})."]
        for oid, pattern in CONDITION_SOURCES.get(flag, []):
            vs = vsac[oid]
            sources.append(f"{VSAC}{oid}|{vs['version']}")
            rule = f" (codes whose display matches `{pattern}`)" if pattern else ""
            lines.append(
                f"From VSAC {vs.get('title')} ({oid}, version {vs['version']}), expansion as "
                f"published in cqframework/{vs['_repo']}{rule}."
            )
            for c in vs["expansion"]["contains"]:
                system = _system(c.get("system", ""))
                display = str(c.get("display", ""))
                if system is None or (pattern and not re.search(pattern, display, re.I)):
                    continue
                concepts[(system, c["code"])] = display
        known = {code: d for (s, code), d in concepts.items() if s == SNOMED}
        for r in roots:
            if (SNOMED, r) in ROOT_DISPLAYS:
                display, src = ROOT_DISPLAYS[(SNOMED, r)]
                lines.append(f"SNOMED CT {r}: {src}.")
            else:
                display = known.get(r, "")
            concepts[(SNOMED, r)] = display
        icd = [c for c in row["icd10"].split(";") if c]
        for code in icd:
            system = ICD10 if code == "Z72.1" else ICD10CM
            concepts.setdefault((system, code), "")
        lines.append(
            "The table's SNOMED CT roots (is-a in compose) and ICD-10 categories "
            f"({', '.join(roots + icd) or 'none'}) come from cds/data/conditions.csv; an ICD-10 "
            "category stands for every code below it."
        )
        if "Z72.1" in icd:
            lines.append("ICD-10 Z72.1 (Alcohol use): WHO ICD-10 2019, chapter XXI.")
        out.append(
            _valueset(
                f"cond-{flag.replace('_', '-')}",
                f"cond_{flag}",
                row["label"],
                "\n".join(lines),
                roots,
                concepts,
                sources,
            )
        )
    return out


def _medication_sets(vsac: dict[str, dict]) -> list[dict]:
    pool: dict[str, str] = {}
    sources = []
    for oid in RXNORM_SOURCES:
        vs = vsac[oid]
        sources.append(f"{VSAC}{oid}|{vs['version']}")
        for c in vs["expansion"]["contains"]:
            if c.get("system") == RXNORM:
                pool[c["code"]] = str(c.get("display", ""))
    out = []
    for row in _rows("medications.csv"):
        cls = row["drug_class"]
        keywords = [k.lower() for k in row["keywords"].split(";") if k]
        concepts: dict[tuple[str, str], str] = {}
        used = set()
        for code, display in pool.items():
            if any(re.search(rf"\b{re.escape(k)}\b", display.lower()) for k in keywords):
                concepts[(RXNORM, code)] = display
                used.add(code)
        for code in [c for c in row["atc"].split(";") if c]:
            concepts[(ATC, code)] = ""
        lines = [
            f"Codes that set `med_{cls}` ({row['label']}).",
            "RxNorm: the codes (ingredients, SCD, SBD) of the VSAC medication value sets "
            "listed as expansion parameters (as published in cqframework eCQM content) "
            "whose display names one of the class's ingredients: " + ", ".join(keywords) + ".",
            "ATC: WHO Collaborating Centre for Drug Statistics Methodology, ATC/DDD Index "
            f"(https://atcddd.fhi.no/atc_ddd_index/): {row['atc'].replace(';', ', ')}; an ATC "
            "group stands for every code below it.",
        ]
        out.append(
            _valueset(
                f"med-{cls.replace('_', '-')}",
                f"med_{cls}",
                row["label"],
                "\n".join(lines),
                [],
                concepts,
                sources if used else [],
            )
        )
    return out


def main(argv: list[str]) -> int:
    dirs = [Path(a) for a in argv]
    if not dirs:
        sys.stderr.write(__doc__ or "")
        return 2
    vsac = _vsac(dirs)
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for vs in _condition_sets(vsac) + _medication_sets(vsac):
        path = OUT / f"{vs['id']}.json"
        path.write_text(json.dumps(vs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
