"""A whole synthetic cohort loads into the real FHIR engine with validation on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from synth_helpers import N, read_ndjson

from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server


def test_the_cohort_loads_with_validation(cohort_dir: Path, fhir_engine: FhirEngine) -> None:
    resources = [r for f in sorted((cohort_dir / "fhir").glob("*.ndjson")) for r in read_ndjson(f)]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    answer = fhir_engine.load(bundle)
    bad = [
        (
            e["resource"]["resourceType"],
            e["resource"]["id"],
            str(a.get("response", {}).get("outcome"))[:300],
        )
        for e, a in zip(bundle["entry"], answer["entry"], strict=True)
        if not str(a["response"]["status"]).startswith("2")
    ]
    assert bad == []
    group = httpx.get(f"{fhir_engine.base_url}/Group/hf-followup", timeout=30).json()
    assert len(group["member"]) == N
