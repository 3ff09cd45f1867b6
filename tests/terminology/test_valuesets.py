"""The shipped value sets: well-formed FHIR, sourced, consistent with the tables, codes
that can exist (SNOMED CT Verhoeff check digit), and the two corrected ICD-10 rows."""

from __future__ import annotations

from fhir.resources.R4B.valueset import ValueSet

from cds.clinical_tables import condition_specs, drug_class_specs
from cds.terminology import RXNORM, SNOMED, shipped_terminology, shipped_valuesets
from cds.terminology.valuesets import expansion_codes
from tests.mapping.test_code_tables import verhoeff_ok


def test_one_valid_valueset_per_flag_with_its_source() -> None:
    sets = {vs["name"]: vs for vs in shipped_valuesets()}
    names = {f"cond_{c.name}" for c in condition_specs()} | {
        f"med_{d.name}" for d in drug_class_specs()
    }
    assert set(sets) == names
    for vs in sets.values():
        ValueSet.model_validate(vs)
        assert vs["version"] and vs["description"] and vs["copyright"]
        assert vs["expansion"]["total"] == len(expansion_codes(vs))
        for p in vs["expansion"]["parameter"]:
            assert p["valueUri"].startswith("http://cts.nlm.nih.gov/fhir/ValueSet/")
            assert "|" in p["valueUri"]  # the source's version


def test_table_roots_are_in_their_value_sets() -> None:
    t = shipped_terminology()
    for c in condition_specs():
        for code in c.snomed_codes:
            assert f"cond_{c.name}" in (t.names_for(SNOMED, code) or ()), (c.name, code)
        for code in c.icd10:
            assert f"cond_{c.name}" in (t.names_for("http://hl7.org/fhir/sid/icd-10", code) or ())
    for d in drug_class_specs():
        for code in d.atc:
            assert f"med_{d.name}" in (t.names_for("http://www.whocc.no/atc", code + "01") or ())


def test_every_snomed_code_passes_its_check_digit() -> None:
    codes = {c for vs in shipped_valuesets() for s, c, _ in expansion_codes(vs) if s == SNOMED}
    assert len(codes) > 700
    for code in codes:
        assert verhoeff_ok(code), code


def test_descendants_and_scd_codes_map() -> None:
    t = shipped_terminology()
    assert "cond_diabetes" in (t.names_for(SNOMED, "44054006") or ())
    assert "cond_heart_failure" in (t.names_for(SNOMED, "88805009") or ())
    assert "cond_hyperlipidemia" in (t.names_for(SNOMED, "302870006") or ())
    assert "cond_hfref" in (t.names_for(SNOMED, "417996009") or ())
    assert "cond_prior_mi" in (t.names_for(SNOMED, "401303003") or ())
    assert (t.names_for(RXNORM, "200031") or set()) == {"med_beta_blocker"}
    assert t.names_for("http://loinc.org", "718-7") is None  # not a value-set system


def test_the_two_corrected_icd10_rows() -> None:
    t = shipped_terminology()
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    i509 = t.names_for(icd, "I50.9") or set()
    assert "cond_hfmref" not in i509 and "cond_heart_failure" in i509
    assert "cond_alcohol" not in (t.names_for(icd, "Z72.89") or set())
    assert "cond_alcohol" in (t.names_for("http://hl7.org/fhir/sid/icd-10", "Z72.1") or set())
    assert "cond_alcohol" in (t.names_for(icd, "F10.20") or set())
