"""The generated mapping document is current; the patient CLI prints the model input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.cli import main
from cds.mapping.doc import render
from tests.mapping.fhir_builders import SNOMED, condition, obs, patient, write_ndjson
from tests.sources.dicom_builders import write_series

ROOT = Path(__file__).resolve().parents[2]


def test_fhir_mapping_doc_is_current():
    doc = ROOT / "docs" / "fhir-mapping.md"
    assert doc.read_text(encoding="utf-8") == render(), (
        "docs/fhir-mapping.md is stale: run `mprtm mapping doc --out docs/fhir-mapping.md`"
    )


def test_doc_check_flag(tmp_path, capsys):
    out = tmp_path / "m.md"
    assert main(["mapping", "doc", "--out", str(out)]) == 0
    assert main(["mapping", "doc", "--out", str(out), "--check"]) == 0
    out.write_text("old")
    assert main(["mapping", "doc", "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


@pytest.fixture()
def configured(tmp_path, monkeypatch):
    write_ndjson(
        tmp_path / "fhir",
        [
            patient("p1", mrn="MRN-1"),
            obs("o1", "p1", "2160-0", 1.0, "mg/dL", "2026-10-01"),
            obs("o2", "p1", "10230-1", 99.6, "%", "2026-10-02"),
            condition("c1", "p1", SNOMED, "73211009"),
        ],
    )
    uid, _ = write_series(tmp_path / "dicom", patient_id="MRN-1", description="LGE SAX", n_slices=4)
    write_series(tmp_path / "dicom", patient_id="MRN-1", description="localizer", n_slices=2)
    monkeypatch.setenv("MPRTM_FHIR__NDJSON_DIR", str(tmp_path / "fhir"))
    monkeypatch.setenv("MPRTM_PACS__FOLDER", str(tmp_path / "dicom"))
    monkeypatch.setenv("MPRTM_PACS__CACHE_DIR", str(tmp_path / "cache"))
    return uid


def test_patient_features_json(configured, capsys):
    rc = main(
        ["patient", "features", "p1", "--json", "--as-of", "2026-11-01", "--image-size", "16"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["features"]["creatinine"] == {
        "value": 88.42,
        "unit": "umol/L",
        "date": "2026-10-01",
        "source": "Observation/o1",
        "original": "1 mg/dL",
    }
    assert out["numeric"]["cond_diabetes"] == 1.0
    assert out["lge_series"]["series_instance_uid"] == configured
    assert out["n_slices"] == 4 and out["image_shape"] == [4, 16, 16]
    assert any("Observation/o2" in w for w in out["warnings"])
    assert out["basis"] == ["Patient/p1", "Observation/o1", "Condition/c1"]
    assert "text" not in out


def test_patient_features_text_and_errors(configured, capsys):
    assert main(["patient", "features", "p1", "--as-of", "2026-11-01", "--no-images"]) == 0
    text = capsys.readouterr().out
    assert "creatinine" in text and "Observation/o1" in text and "(none selected)" in text
    assert main(["patient", "features", "ghost", "--no-images"]) == 1
    assert "Patient/ghost" in capsys.readouterr().err
    assert main(["patient", "features", "p1", "--as-of", "yesterday"]) == 2
