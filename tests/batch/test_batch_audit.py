"""A batch run leaves, on the real FHIR engine (which validates what it stores), one
AuditEvent per patient record read and one per RiskAssessment written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from cds.batch.runner import BatchRunner, RunOptions
from tests.batch.conftest import AS_OF, N_PATIENTS, batch_settings
from tests.servers.fhir_engine import FhirEngine


@pytest.mark.fhir_server
def test_batch_run_is_audited_on_the_fhir_engine(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path, fhir_engine: FhirEngine
) -> None:
    fhir_engine.reset(data=True)
    s = batch_settings(
        tmp_path,
        cohort_dir,
        checkpoint,
        audit__sink="fhir",
        audit__fhir_url=fhir_engine.base_url,
        audit__spill_dir=str(tmp_path / "spill"),
    )
    with BatchRunner(s) as runner:
        summary = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert summary.n_done == N_PATIENTS
    rsp = httpx.get(f"{fhir_engine.base_url}/AuditEvent", params={"_count": "500"}, timeout=30)
    events = [e["resource"] for e in rsp.json().get("entry", [])]
    kinds = Counter(e["subtype"][0]["code"] for e in events)
    assert kinds == {"search-type": N_PATIENTS, "update": N_PATIENTS}
    patients = {e["entity"][0]["what"]["reference"] for e in events}
    assert len(patients) == N_PATIENTS
    writes = [e for e in events if e["subtype"][0]["code"] == "update"]
    assert all(e["entity"][1]["what"]["identifier"]["value"] for e in writes)
    assert not list((tmp_path / "spill").glob("*.ndjson"))
