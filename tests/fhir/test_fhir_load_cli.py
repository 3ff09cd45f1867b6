"""``mprtm load-fhir`` with the real engine (validation on), and the cohort pulled back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds.cli import main
from cds.config import Settings
from cds.errors import ConfigError
from cds.sources import make_fhir_rest_source, make_fhir_source
from connectors.fhir.ndjson import NdjsonFolderSource
from connectors.fhir.rest import FhirRestSource
from tests.fhir.cohort import build_cohort
from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "synth",
            "--patients",
            "8",
            "--seed",
            "7",
            "--out",
            str(out),
            "--no-images",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_synthetic_cohort_loads_and_comes_back_complete(
    engine: FhirEngine, synth_dir: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["load-fhir", str(synth_dir), "--fhir-url", engine.base_url, "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = sum(len(p.read_text().splitlines()) for p in (synth_dir / "fhir").glob("*.ndjson"))
    assert "total" in out and out.split("total")[1].split()[:2] == [str(lines), "0"]

    folder = NdjsonFolderSource(synth_dir / "fhir")
    server_settings = settings.replace(fhir__source="server", fhir__base_url=engine.base_url)
    rest = make_fhir_source(server_settings)
    assert isinstance(rest, FhirRestSource)
    try:
        group = json.loads((synth_dir / "fhir" / "Group.ndjson").read_text().splitlines()[0])
        ids = rest.cohort_patient_ids(f"group:{group['id']}")
        assert ids == folder.cohort_patient_ids(f"group:{group['id']}")
        for pid in ids:
            want, got = folder.patient_record(pid), rest.patient_record(pid)
            for attr in (
                "observations",
                "conditions",
                "medication_requests",
                "medication_statements",
                "documents",
                "encounters",
            ):
                assert sorted(r.id for r in getattr(got, attr)) == sorted(
                    r.id for r in getattr(want, attr)
                ), (pid, attr)
            assert got.document_texts == want.document_texts
            assert got.warnings == []
            for a, b in zip(
                sorted(got.observations, key=lambda o: o.id),
                sorted(want.observations, key=lambda o: o.id),
                strict=True,
            ):
                assert a.valueQuantity == b.valueQuantity and a.code == b.code
    finally:
        rest.close()
        folder.close()


def test_rejected_resources_are_reported_and_the_rest_loaded(
    engine: FhirEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort = build_cohort(n_patients=2, n_obs=2, prefix="ld")
    folder = tmp_path / "fhir"
    folder.mkdir()
    for rtype in {r["resourceType"] for r in cohort.resources}:
        lines = [json.dumps(r) for r in cohort.by_type(rtype)]
        if rtype == "Observation":
            lines.insert(
                1,
                json.dumps(
                    {"resourceType": "Observation", "id": "ld-bad", "code": {"text": "no status"}}
                ),
            )
            lines.append("{not json")
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    rc = main(
        [
            "load-fhir",
            str(tmp_path),
            "--fhir-url",
            engine.base_url,
            "--batch-size",
            "5",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "rejected Observation/ld-bad: " in out and "Observation.status" in out
    assert "rejected Observation.ndjson line 10: not JSON" in out
    with make_fhir_rest_source(Settings().replace(fhir__base_url=engine.base_url)) as src:
        for pid in cohort.patient_ids:
            rec = src.patient_record(pid)
            assert len(rec.observations) == cohort.expected[pid]["Observation"]
        assert src.client.count("Observation", {"_id": "ld-bad"}) == 0


def test_load_fhir_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load-fhir", str(tmp_path), "--fhir-url", "http://127.0.0.1:9/fhir"]) == 2
    assert "no *.ndjson files" in capsys.readouterr().err
    assert main(["load-fhir", str(tmp_path)]) == 2


def test_server_source_settings_errors(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="fhir.base_url"):
        make_fhir_source(settings.replace(fhir__source="server"))
    with pytest.raises(ConfigError, match="needs a token"):
        make_fhir_rest_source(
            settings.replace(fhir__base_url="http://127.0.0.1:9/fhir", fhir__auth="bearer")
        )
