"""The batch against real servers: the FHIR engine (R4 validation on) as source and
write-back target, and Orthanc as the PACS over DIMSE (C-FIND + C-GET)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds.batch.runner import BatchRunner, RunOptions
from cds.cli import main as cli
from cds.config import Settings
from tests.batch.conftest import AS_OF, N_PATIENTS, batch_settings
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.servers.fhir_engine import FhirEngine

BROKEN = "broken-on-server"


@pytest.fixture(scope="module")
def orthanc(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = OrthancServer(
        tmp_path_factory.mktemp("orthanc-batch"), modalities={"MPRTM": ("127.0.0.1", free_port())}
    ).start()
    rc = cli(
        [
            "load-dicom",
            str(cohort_dir / "dicom"),
            "--pacs",
            f"127.0.0.1:{server.dicom_port}",
            "--called-aet",
            server.aet,
            "--calling-aet",
            "MPRTM",
            "--no-progress",
        ]
    )
    assert rc == 0
    yield server
    server.stop()


@pytest.fixture
def loaded_engine(fhir_engine: FhirEngine, cohort_dir: Path) -> Iterator[FhirEngine]:
    fhir_engine.reset(data=True)
    assert cli(["load-fhir", str(cohort_dir), "--fhir-url", fhir_engine.base_url]) == 0
    # bad data as real EHRs hold it: a Patient that is not valid R4
    fhir_engine.store_unvalidated(
        {"resourceType": "Patient", "id": BROKEN, "birthDate": "yesterday", "gender": "x"}
    )
    yield fhir_engine
    fhir_engine.reset(data=True)


def _count(engine: FhirEngine, rtype: str) -> int:
    r = httpx.get(f"{engine.base_url}/{rtype}", params={"_summary": "count"}, timeout=30)
    r.raise_for_status()
    return int(r.json()["total"])


def _settings(
    tmp_path: Path, engine: FhirEngine, orthanc: OrthancServer, cohort: Path, checkpoint: Path
) -> Settings:
    return batch_settings(
        tmp_path,
        cohort,
        checkpoint,
        fhir__source="server",
        fhir__base_url=engine.base_url,
        fhir__writeback="server",
        fhir__max_retries=1,
        pacs__source="dimse",
        pacs__host="127.0.0.1",
        pacs__port=orthanc.dicom_port,
        pacs__called_aet=orthanc.aet,
        pacs__calling_aet="MPRTM",
        pacs__retrieve="get",
        batch__cohort="all",
    )


@pytest.mark.fhir_server
@pytest.mark.orthanc
def test_batch_against_fhir_engine_and_orthanc(
    tmp_path: Path,
    loaded_engine: FhirEngine,
    orthanc: OrthancServer,
    cohort_dir: Path,
    checkpoint: Path,
) -> None:
    s = _settings(tmp_path, loaded_engine, orthanc, cohort_dir, checkpoint)
    with BatchRunner(s) as runner:
        first = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert first.n_total == N_PATIENTS + 1
    assert first.n_done == N_PATIENTS
    assert list(first.failures) == [BROKEN]
    # one RiskAssessment per patient, accepted by the engine's validation; one Device
    assert _count(loaded_engine, "RiskAssessment") == N_PATIENTS
    assert _count(loaded_engine, "Device") == 1
    bundle = httpx.get(
        f"{loaded_engine.base_url}/RiskAssessment", params={"_count": "100"}, timeout=30
    ).json()
    subjects = {e["resource"]["subject"]["reference"] for e in bundle["entry"]}
    assert len(subjects) == N_PATIENTS
    with_image = [
        e
        for e in bundle["entry"]
        if any(b["reference"].startswith("ImagingStudy/") for b in e["resource"]["basis"])
    ]
    assert with_image, "LGE series came from Orthanc for some patients"
    # a second run (new attempt of the same run, then a forced re-score) leaves the count
    with BatchRunner(s) as runner:
        second = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert second.n_skipped_already_done == N_PATIENTS
    with BatchRunner(s.replace(batch__incremental=False)) as runner:  # forced: score everyone
        third = runner.run(RunOptions(as_of=AS_OF, progress=False, run_key="rescore-same-day"))
    assert third.n_done == N_PATIENTS
    assert _count(loaded_engine, "RiskAssessment") == N_PATIENTS
    assert _count(loaded_engine, "Device") == 1
