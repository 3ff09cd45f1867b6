"""The FHIR side of the synthetic cohort: valid R4, resolvable references, table codes."""

from __future__ import annotations

import base64
import csv
import importlib
from collections import Counter
from pathlib import Path

import pytest
from synth_helpers import N, read_ndjson

from cds.clinical_tables import condition_specs, drug_class_specs, feature_specs, loinc_index
from cds.synth import _ids
from cds.synth.medications import CATALOGUE, OTHER_DRUGS

TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "DocumentReference",
    "ImagingStudy",
    "Group",
)


def _all(cohort_dir: Path) -> dict[str, list[dict]]:
    return {t: list(read_ndjson(cohort_dir / "fhir" / f"{t}.ndjson")) for t in TYPES}


@pytest.mark.parametrize("rtype", TYPES)
def test_every_resource_parses_as_r4(cohort_dir: Path, rtype: str) -> None:
    cls = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    lines = (cohort_dir / "fhir" / f"{rtype}.ndjson").read_text(encoding="utf-8").splitlines()
    assert lines
    for line in lines:
        res = cls.model_validate_json(line)
        assert res.id


def test_references_resolve_within_the_cohort(cohort_dir: Path) -> None:
    res = _all(cohort_dir)
    known = {f"{t}/{r['id']}" for t, rs in res.items() for r in rs}
    ids = Counter(f"{t}/{r['id']}" for t, rs in res.items() for r in rs)
    assert max(ids.values()) == 1, "duplicate logical ids"

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            out = [node["reference"]] if isinstance(node.get("reference"), str) else []
            return out + [x for v in node.values() for x in refs(v)]
        if isinstance(node, list):
            return [x for v in node for x in refs(v)]
        return []

    all_refs = [x for rs in res.values() for r in rs for x in refs(r)]
    assert len(all_refs) > 1000
    assert set(all_refs) <= known


def test_patients_group_and_identifiers(cohort_dir: Path) -> None:
    res = _all(cohort_dir)
    patients = res["Patient"]
    assert len(patients) == N
    for p in patients:
        (ident,) = p["identifier"]
        assert ident["system"] == _ids.MRN_SYSTEM and ident["value"].startswith("SYN")
    (group,) = res["Group"]
    assert group["id"] == "hf-followup" and group["actual"] is True
    members = [m["entity"]["reference"] for m in group["member"]]
    assert members == [f"Patient/{p['id']}" for p in patients]
    kinds = Counter(e["class"]["code"] for e in res["Encounter"])
    assert kinds["IMP"] == N and kinds["AMB"] >= N


def test_observations_use_the_feature_table(cohort_dir: Path) -> None:
    index = loinc_index()
    implausible = {
        r["observation_id"]
        for r in csv.DictReader(
            (cohort_dir / "truth" / "implausible_values.csv").read_text().splitlines()
        )
    }
    seen = set()
    for obs in read_ndjson(cohort_dir / "fhir" / "Observation.ndjson"):
        (coding,) = obs["code"]["coding"]
        assert coding["system"] == "http://loinc.org"
        spec = index[coding["code"]]
        q = obs["valueQuantity"]
        assert q["system"] == "http://unitsofmeasure.org" and q["code"] == q["unit"]
        factor = spec.factor(coding["code"], q["code"])
        assert factor is not None, f"{obs['id']}: unit {q['code']} not convertible"
        value = q["value"] * factor
        inside = spec.min <= value <= spec.max
        assert inside != (obs["id"] in implausible), obs["id"]
        seen.add(spec.name)
    # nearly every feature of the table appears in a 20-patient cohort
    assert len(seen) >= len(feature_specs()) - 3


def test_conditions_carry_snomed_and_icd10(cohort_dir: Path) -> None:
    """Every Condition has its ICD-10-CM code and, where the table has one, its SNOMED CT
    code (coronary stent in situ has none: an ICD-10 code alone)."""
    specs = {s.snomed: s for s in condition_specs() if s.snomed}
    no_snomed = [s for s in condition_specs() if not s.snomed]
    names = set()
    for cond in read_ndjson(cohort_dir / "fhir" / "Condition.ndjson"):
        systems = {c["system"]: c["code"] for c in cond["code"]["coding"]}
        icd = systems["http://hl7.org/fhir/sid/icd-10-cm"]
        if "http://snomed.info/sct" in systems:
            spec = specs[systems["http://snomed.info/sct"]]
        else:
            spec = next(s for s in no_snomed if s.matches_icd10(icd))
        if spec.icd10:
            assert spec.matches_icd10(icd)
        else:  # ICD-10 has no code for HFmrEF: heart failure, unspecified
            assert (spec.name, icd) == ("hfmref", "I50.9")
        names.add(spec.name)
    assert names & {"hfref", "hfmref", "hfpef"}
    assert len(names) >= 12


def test_catalogue_drugs_fall_in_their_class() -> None:
    by_class = {s.name: s for s in drug_class_specs()}
    for cls, drugs in CATALOGUE.items():
        for drug in drugs:
            assert any(k in drug.name for k in by_class[cls].keywords), (cls, drug.name)
    for _, drug in OTHER_DRUGS:
        assert not any(k in drug.name for s in by_class.values() for k in s.keywords)


def test_medication_requests_change_over_time(cohort_dir: Path) -> None:
    reqs = list(read_ndjson(cohort_dir / "fhir" / "MedicationRequest.ndjson"))
    status = Counter(r["status"] for r in reqs)
    assert status["active"] > N and status["stopped"] > 0
    assert any("priorPrescription" in r for r in reqs)
    for r in reqs:
        (coding,) = r["medicationCodeableConcept"]["coding"]
        assert coding["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
        assert r["dosageInstruction"][0]["text"]


def test_notes_are_plain_text_with_signal(cohort_dir: Path) -> None:
    docs = list(read_ndjson(cohort_dir / "fhir" / "DocumentReference.ndjson"))
    kinds = Counter(d["type"]["coding"][0]["code"] for d in docs)
    assert kinds["18842-5"] == N and kinds["11506-3"] >= N
    texts = [base64.b64decode(d["content"][0]["attachment"]["data"]).decode("utf-8") for d in docs]
    assert all(d["content"][0]["attachment"]["contentType"].startswith("text/plain") for d in docs)
    assert len(set(texts)) == len(texts)
    joined = "\n".join(texts)
    assert "DISCHARGE SUMMARY" in joined and "FOLLOW-UP" in joined
