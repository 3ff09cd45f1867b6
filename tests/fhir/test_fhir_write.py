"""Write-back helpers against the real engine: conditional writes and transactions."""

from __future__ import annotations

import uuid

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from connectors.errors import FhirInvalidResource
from connectors.fhir.rest import from_settings, to_json
from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server
SYSTEM = "urn:mprtm:risk-assessment"


def _risk(pid: str, value: str, probability: float) -> RiskAssessment:
    return RiskAssessment.model_validate(
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "identifier": [{"system": SYSTEM, "value": value}],
            "subject": {"reference": f"Patient/{pid}"},
            "prediction": [
                {"probabilityDecimal": probability, "outcome": {"text": "death within 1 year"}}
            ],
        }
    )


def test_conditional_update_is_idempotent(engine: FhirEngine) -> None:
    pid, value = f"wp-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    engine.put({"resourceType": "Patient", "id": pid})
    with from_settings(base_url=engine.base_url) as src:
        first = src.client.conditional_update(_risk(pid, value, 0.2), SYSTEM, value)
        second = src.client.conditional_update(_risk(pid, value, 0.3), SYSTEM, value)
        assert first.created and not second.created
        assert first.id == second.id and first.resource_type == "RiskAssessment"
        assert src.client.count("RiskAssessment", {"identifier": f"{SYSTEM}|{value}"}) == 1
        stored = src.client.read("RiskAssessment", first.id)
        assert isinstance(stored, RiskAssessment)
        assert float(stored.prediction[0].probabilityDecimal) == 0.3


def test_conditional_create_keeps_the_existing_one(engine: FhirEngine) -> None:
    value = uuid.uuid4().hex
    device = {
        "resourceType": "Device",
        "identifier": [{"system": "urn:mprtm:model", "value": value}],
        "deviceName": [{"name": "M-PRTM", "type": "model-name"}],
    }
    with from_settings(base_url=engine.base_url) as src:
        a = src.client.conditional_create(device, f"identifier=urn:mprtm:model|{value}")
        b = src.client.conditional_create(device, f"identifier=urn:mprtm:model|{value}")
        assert a.created and not b.created and a.id == b.id
        assert src.client.count("Device", {"identifier": f"urn:mprtm:model|{value}"}) == 1


def test_transaction_with_urn_uuid_references(engine: FhirEngine) -> None:
    value, dev = uuid.uuid4().hex, uuid.uuid4().hex
    pid = f"wp-{uuid.uuid4().hex[:8]}"
    engine.put({"resourceType": "Patient", "id": pid})
    dev_urn = f"urn:uuid:{uuid.uuid4()}"
    risk = _risk(pid, value, 0.4)
    entries = [
        {
            "fullUrl": dev_urn,
            "resource": {
                "resourceType": "Device",
                "identifier": [{"system": "urn:mprtm:model", "value": dev}],
            },
            "request": {
                "method": "POST",
                "url": "Device",
                "ifNoneExist": f"identifier=urn:mprtm:model|{dev}",
            },
        },
        {
            "resource": {**to_json(risk), "performer": {"reference": dev_urn}},
            "request": {"method": "PUT", "url": f"RiskAssessment?identifier={SYSTEM}|{value}"},
        },
    ]
    with from_settings(base_url=engine.base_url) as src:
        results = src.client.transaction(entries)
        assert [r.status for r in results] == [201, 201] and all(r.ok for r in results)
        again = src.client.transaction(entries)
        assert [r.status for r in again] == [200, 200]
        ra_id = results[1].location.split("/")[1]
        stored = src.client.read("RiskAssessment", ra_id)
        assert stored.performer.reference == results[0].location.split("/_history")[0]
        assert src.client.count("RiskAssessment", {"identifier": f"{SYSTEM}|{value}"}) == 1


def test_rejected_transaction_names_the_entry(engine: FhirEngine) -> None:
    pid = f"wp-{uuid.uuid4().hex[:8]}"
    entries = [
        {
            "resource": {"resourceType": "Patient", "id": pid},
            "request": {"method": "PUT", "url": f"Patient/{pid}"},
        },
        {
            "resource": {"resourceType": "RiskAssessment", "id": "bad-ra"},  # no status/subject
            "request": {"method": "PUT", "url": "RiskAssessment/bad-ra"},
        },
    ]
    with from_settings(base_url=engine.base_url) as src:
        with pytest.raises(FhirInvalidResource, match=r"RiskAssessment/bad-ra.*Missing required"):
            src.client.transaction(entries)
        assert src.client.count("Patient", {"_id": pid}) == 0  # all or nothing
        results = src.client.transaction(entries, kind="batch")
        assert [r.status for r in results] == [201, 400] or [r.status for r in results] == [
            200,
            400,
        ]
        assert "RiskAssessment.status" in results[1].diagnostics
