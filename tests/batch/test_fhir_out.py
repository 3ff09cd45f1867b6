"""What the service writes to the EHR: HL7 risk-probability by its definitions, the product's
tiers in a code system of its own, URLs under the canonical base, and FHIR R4 validity (the
fhirclient R4 models and the test FHIR engine's validator)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from cds.app import create_app
from cds.batch.fhir_out import (
    RISK_PROBABILITY,
    build_device,
    build_risk_assessment,
    check_r4,
    risk_probability_code,
)
from cds.batch.server_writer import ServerWriter
from cds.batch.writeback import NdjsonWriter
from cds.canonical import DEFAULT_BASE, Canonical, canonical
from cds.config import Settings
from connectors.fhir._http import FhirHttp
from connectors.fhir.rest import FhirRestClient
from tests.servers.fhir_engine import FhirEngine

BASE = "https://cds.hospital.example/fhir"


def _ra(probs: dict[str, float], tiers: dict[str, str], systems: Canonical | None = None) -> Any:
    return build_risk_assessment(
        patient_id="p1",
        model_name="mprtm",
        model_version="mprtm-abc",
        device_reference="Device/d1",
        occurrence=dt.datetime(2026, 11, 29, 2, 0, tzinfo=dt.UTC),
        run_date=dt.date(2026, 11, 29),
        probabilities=probs,
        tiers=tiers,
        modality_weights={"numeric": 0.6, "text": 0.4},
        fibrosis_burden=None,
        basis=["Observation/o1"],
        canonical=systems,
    )


@pytest.mark.parametrize(
    ("p", "code"),
    [
        (0.0, "negligible"),
        (0.009, "negligible"),
        (0.01, "low"),
        (0.099, "low"),
        (0.10, "moderate"),
        (0.31, "moderate"),
        (0.50, "moderate"),
        (0.5001, "high"),
        (0.999, "high"),
        (1.0, "high"),
    ],
)
def test_risk_probability_follows_the_hl7_definitions(p: float, code: str) -> None:
    assert risk_probability_code(p)[0] == code


def test_a_31_percent_death_risk_is_not_hl7_high_but_keeps_the_product_tier() -> None:
    ra = _ra(
        {"death": 0.31, "rehospitalization": 0.62}, {"death": "high", "rehospitalization": "high"}
    )
    death, rehosp = ra.prediction
    (likelihood,) = death.qualitativeRisk.coding
    assert (likelihood.system, likelihood.code) == (RISK_PROBABILITY, "moderate")
    assert rehosp.qualitativeRisk.coding[0].code == "high"  # more likely than not
    (tier_ext,) = death.extension
    assert tier_ext.url == f"{DEFAULT_BASE}/StructureDefinition/risk-tier"
    (tier,) = tier_ext.valueCodeableConcept.coding
    assert (tier.system, tier.code) == (f"{DEFAULT_BASE}/CodeSystem/risk-tier", "high")


def test_every_system_is_a_url_under_the_configured_canonical_base(
    settings: Settings,
) -> None:
    systems = canonical(settings.replace(fhir__canonical_base=BASE + "/"))
    assert systems.base == BASE
    ra = _ra({"death": 0.2}, {"death": "moderate"}, systems)
    device = build_device(
        "mprtm", "mprtm-abc", "http://x/model-card", synthetic=True, canonical=systems
    )
    text = ra.model_dump_json() + device.model_dump_json()
    assert "urn:" not in text
    ours = {ra.identifier[0].system, ra.method.coding[0].system, ra.code.coding[0].system}
    ours |= {c.system for c in ra.prediction[0].outcome.coding if "snomed" not in c.system}
    ours.add(device.identifier[0].system)
    assert ours == {
        f"{BASE}/identifier/riskassessment",
        f"{BASE}/CodeSystem/model",
        f"{BASE}/CodeSystem/outcome",
        f"{BASE}/identifier/model-version",
    }
    # empty: under the public URL, where the service serves its CodeSystems
    public = settings.replace(server__public_url="https://inbox.example/")
    assert canonical(public).base == "https://inbox.example/fhir"


def test_the_code_systems_resolve_at_their_default_urls(settings: Settings) -> None:
    app = create_app(settings, TESTING=True)
    client = app.test_client()
    ra = _ra({"death": 0.2}, {"death": "moderate"}, canonical(settings))
    tier_system = ra.prediction[0].extension[0].valueCodeableConcept.coding[0].system
    outcome_system = ra.prediction[0].outcome.coding[-1].system
    for system, code in ((tier_system, "moderate"), (outcome_system, "death")):
        path = system.removeprefix(settings.server.public_url.rstrip("/"))
        doc = client.get(path).get_json()
        assert doc["resourceType"] == "CodeSystem" and doc["url"] == system
        assert code in {c["code"] for c in doc["concept"]}
    assert client.get("/fhir/CodeSystem/nope").status_code == 404
    app.extensions["mprtm.engine"].dispose()


def test_r4_check_names_the_offending_element() -> None:
    ra = _ra({"death": 0.2}, {"death": "moderate"})
    check_r4(ra)
    bad = RiskAssessment.model_construct(**{**dict(ra), "status": None})
    with pytest.raises(
        ValueError, match=r"(?s)RiskAssessment is not valid FHIR R4.*\"status\""
    ) as e:
        check_r4(bad)
    assert "object at 0x" not in str(e.value)


@pytest.mark.fhir_server
def test_what_we_write_passes_the_fhir_engine_validator(
    fhir_engine: FhirEngine, tmp_path: Any
) -> None:
    systems = Canonical(BASE)
    http = FhirHttp(fhir_engine.base_url, max_retries=0)
    writer = ServerWriter(FhirRestClient(http))
    device_ref = writer.ensure_device(
        build_device("mprtm", "mprtm-abc", "http://x/model-card", synthetic=True, canonical=systems)
    )
    probs = {"death": 0.004, "cv_death": 0.05, "rehospitalization": 0.31, "macce": 0.77}
    ra = _ra(probs, {k: "high" for k in probs}, systems)
    ra.performer.reference = device_ref
    ra_id = writer.write(ra)
    stored = httpx.get(f"{fhir_engine.base_url}/RiskAssessment/{ra_id}").json()
    assert [p["qualitativeRisk"]["coding"][0]["code"] for p in stored["prediction"]] == [
        "negligible",
        "low",
        "moderate",
        "high",
    ]
    assert stored["prediction"][0]["extension"][0]["url"] == systems.risk_tier_extension
    # the same writer finds it again by identifier (no duplicate)
    assert writer.write(ra) == ra_id
    # and the engine's validator is on: a broken copy is refused
    broken = json.loads(ra.model_dump_json(exclude_none=True))
    broken["prediction"][0]["probabilityDecimal"] = "high"
    resp = httpx.post(
        f"{fhir_engine.base_url}/RiskAssessment",
        content=json.dumps(broken),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert resp.status_code == 400
    # the NDJSON writer keeps the canonical identifier system too
    nd = NdjsonWriter(tmp_path / "RiskAssessment.ndjson")
    nd.write(ra)
    line = json.loads((tmp_path / "RiskAssessment.ndjson").read_text().splitlines()[0])
    assert line["identifier"][0]["system"] == f"{BASE}/identifier/riskassessment"
    http.close()
