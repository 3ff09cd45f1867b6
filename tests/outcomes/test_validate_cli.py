"""``mprtm outcomes`` -> ``train --labels --as-of`` -> ``validate`` -> ``recalibrate``
end to end on a small follow-up cohort (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.cli import main
from model.checkpoint import load_checkpoint
from tests.model.helpers import write_tiny_bert

TINY = [
    "--set",
    "image_size=32",
    "--set",
    "max_slices=3",
    "--set",
    "crop=1.0",
    "--set",
    "enc_dims=8,16,16",
    "--set",
    "embed_dim=32",
    "--set",
    "fusion_heads=2",
    "--set",
    "numeric_hidden=16",
    "--set",
    "text_window=64",
    "--set",
    "ensemble=1",
]
AS_OF = "2026-11-01"


@pytest.mark.slow
def test_site_path(tmp_path: Path) -> None:
    bert = write_tiny_bert(tmp_path / "bert")
    for name, seed, extra in (("base", 1, []), ("site", 2, ["--shift", "age=+10"])):
        assert (
            main(
                [
                    "synth",
                    "--patients",
                    "160",
                    "--seed",
                    str(seed),
                    "--no-images",
                    "--follow-up",
                    "--quiet",
                    "--out",
                    str(tmp_path / name),
                    *extra,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "outcomes",
                    "--as-of",
                    AS_OF,
                    "--ndjson",
                    str(tmp_path / name / "fhir"),
                    "--out",
                    str(tmp_path / name / "labels.csv"),
                ]
            )
            == 0
        )
    (tmp_path / "base" / "truth" / "labels.csv").unlink()  # a site has no truth folder labels
    ckpt = tmp_path / "m.pt"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "base"),
                "--labels",
                str(tmp_path / "base" / "labels.csv"),
                "--as-of",
                AS_OF,
                "--out",
                str(ckpt),
                "--epochs",
                "0",
                "--fusion-epochs",
                "2",
                "--threads",
                "1",
                "--text-encoder",
                str(bert),
                "--quiet",
                *TINY,
            ]
        )
        == 0
    )
    assert "training_reference" in load_checkpoint(ckpt).metrics
    site = [
        "--data",
        str(tmp_path / "site"),
        "--labels",
        str(tmp_path / "site" / "labels.csv"),
        "--as-of",
        AS_OF,
        "--threads",
        "1",
        "--quiet",
    ]
    assert (
        main(
            [
                "validate",
                *site,
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "v"),
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    rep = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert set(rep["overall"]["death"]) >= {"auroc", "auroc_ci", "ece", "calibration_slope"}
    age = next(r for r in rep["shift"] if r["feature"] == "age")
    assert age["smd"] > 0.5  # the site is ten years older
    page = (tmp_path / "v" / "validation.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    new = tmp_path / "recal.pt"
    assert main(["recalibrate", *site, "--checkpoint", str(ckpt), "--out", str(new)]) == 0
    ck = load_checkpoint(new)
    assert (
        ck.metrics["provenance"]["parent_data_fingerprint"]
        == load_checkpoint(ckpt).data_fingerprint
    )
    assert "## Provenance" in new.with_suffix(".md").read_text()
    assert (
        main(
            [
                "validate",
                *site,
                "--checkpoint",
                str(new),
                "--out",
                str(tmp_path / "v2"),
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    rep2 = json.loads((tmp_path / "v2" / "validation.json").read_text())
    assert rep2["n_patients"] < rep["n_patients"]  # the fitting half is left out
