"""``mprtm terminology refresh`` against the test FHIR engine serving ``ValueSet/$expand``.

The engine holds a fragment of SNOMED CT as a CodeSystem: chronic obstructive pulmonary
disease (13645005) with two of its descendants, chronic obstructive bronchitis (185086009)
and pulmonary emphysema (87433001), as SNOMED CT International relates them.  The shipped
COPD value set lists only the root; after the refresh the cached expansion holds the
descendants, and a Condition coded with one of them sets ``cond_pulmonary_disease``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fhir.resources.R4B.condition import Condition

from cds.cli import main
from cds.config import Settings
from cds.mapping.conditions import condition_flags
from cds.terminology import SNOMED, activate, use
from cds.terminology.refresh import refresh
from tests.servers.fhir_engine import FhirEngine

SNOMED_FRAGMENT = {
    "resourceType": "CodeSystem",
    "id": "snomed-fragment",
    "url": SNOMED,
    "status": "active",
    "content": "fragment",
    "concept": [
        {
            "code": "13645005",
            "display": "Chronic obstructive pulmonary disease",
            "concept": [
                {"code": "185086009", "display": "Chronic obstructive bronchitis"},
                {"code": "87433001", "display": "Pulmonary emphysema"},
            ],
        }
    ],
}
AS_OF = dt.date(2026, 6, 1)


def _condition(code: str) -> Condition:
    return Condition.model_validate(
        {
            "resourceType": "Condition",
            "id": f"c-{code}",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "recordedDate": "2026-01-01",
        }
    )


@pytest.fixture
def engine(fhir_engine: FhirEngine) -> Iterator[FhirEngine]:
    fhir_engine.reset(data=True)
    fhir_engine.put(SNOMED_FRAGMENT)
    yield fhir_engine
    use(None)


def test_refresh_caches_descendants_the_shipped_expansion_lacks(
    engine: FhirEngine, migrated_settings: Settings
) -> None:
    settings = migrated_settings.replace(terminology__url=engine.base_url)
    unrecognised: list[str] = []
    flags, _ = condition_flags([_condition("185086009")], as_of=AS_OF, unrecognised=unrecognised)
    assert flags["cond_pulmonary_disease"] == 0.0
    assert unrecognised == [f"Condition/c-185086009: {SNOMED}|185086009"]

    results = {r.valueset_id: r for r in refresh(settings)}
    assert all(not r.error for r in results.values()), [r.error for r in results.values()]
    copd = results["cond-pulmonary-disease"]
    assert copd.expanded == copd.shipped + 2
    # value sets without a SNOMED CT filter come back as shipped
    assert results["med-beta-blocker"].expanded == results["med-beta-blocker"].shipped

    terminology = activate(settings)
    assert terminology.origin["cond_pulmonary_disease"].startswith(engine.base_url)
    for code in ("185086009", "87433001"):
        unrecognised = []
        flags, found = condition_flags([_condition(code)], as_of=AS_OF, unrecognised=unrecognised)
        assert flags["cond_pulmonary_disease"] == 1.0
        assert found["cond_pulmonary_disease"].source == f"Condition/c-{code}"
        assert unrecognised == []


def test_without_a_cache_the_shipped_expansions_apply(migrated_settings: Settings) -> None:
    terminology = activate(migrated_settings)
    assert terminology.origin["cond_diabetes"] == "shipped 2026.1"
    flags, _ = condition_flags([_condition("44054006")], as_of=AS_OF)
    assert flags["cond_diabetes"] == 1.0


def test_an_expansion_the_server_refuses_is_reported_and_keeps_the_shipped_one(
    fhir_engine: FhirEngine, migrated_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """No SNOMED CT CodeSystem on the server: every set with an is-a root fails by name."""
    fhir_engine.reset(data=True)
    settings = migrated_settings.replace(terminology__url=fhir_engine.base_url)
    results = {r.valueset_id: r for r in refresh(settings)}
    assert "HTTP 422" in results["cond-diabetes"].error
    assert "ValueSet/cond-diabetes" in results["cond-diabetes"].error
    assert not results["med-statin"].error
    terminology = activate(settings)
    assert terminology.origin["cond_diabetes"] == "shipped 2026.1"
    use(None)


def test_refresh_without_a_url_is_a_clear_error(
    migrated_settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    from cds.errors import TerminologyError

    with pytest.raises(TerminologyError, match="terminology.url"):
        refresh(migrated_settings)
    assert main  # the command is registered (see test_cli_lists_terminology)


def test_cli_lists_terminology(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["terminology", "--help"])
    assert "refresh" in capsys.readouterr().out
