"""``mprtm train`` and ``mprtm evaluate`` end to end on a small synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.cli import main
from model.checkpoint import load_checkpoint
from model.types import OUTCOMES

TINY = [
    "--set", "image_size=32", "--set", "max_slices=3", "--set", "crop=1.0",
    "--set", "enc_dims=8,16,16",
    "--set", "embed_dim=32", "--set", "fusion_heads=2", "--set", "numeric_hidden=16",
    "--set", "text_window=64", "--set", "seg_batch=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "data"
    rc = main(["synth", "--patients", "60", "--seed", "4", "--out", str(out),
               "--image-size", "32", "--slices", "3", "--quiet"])  # fmt: skip
    assert rc == 0
    return out


@pytest.mark.slow
def test_train_then_evaluate(cohort: Path, tiny_bert: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    rc = main(["train", "--data", str(cohort), "--out", str(ckpt), "--epochs", "1",
               "--fusion-epochs", "2", "--seed", "1", "--text-encoder", str(tiny_bert),
               "--quiet", *TINY])  # fmt: skip
    assert rc == 0
    ck = load_checkpoint(ckpt)
    assert ck.synthetic_training_data  # the folder has truth/risk.csv
    assert ck.config.causes[0] == "none" and len(ck.config.causes) > 1
    assert ckpt.with_suffix(".md").is_file()
    report = tmp_path / "report"
    rc = main(["evaluate", "--data", str(cohort), "--checkpoint", str(ckpt), "--out",
               str(report), "--bootstrap", "50", "--quiet"])  # fmt: skip
    assert rc == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_test"] == 15
    expected = {"fusion", "numeric_only", "text_only", "image_only", "logistic_numeric",
                "maggic", "oracle", "segmentation", "n_test", "real_anatomy"}  # fmt: skip
    assert set(metrics) == expected
    for name in expected - {"segmentation", "n_test", "real_anatomy"}:
        assert set(metrics[name]) <= set(OUTCOMES)
        for values in metrics[name].values():
            assert set(values) == {"auroc", "auroc_ci", "auprc", "brier", "ece"}
            assert values["auroc_ci"][0] <= values["auroc"] <= values["auroc_ci"][1] + 1e-9
    assert set(metrics["segmentation"]) == {"dice_myocardium", "dice_enhancement", "burden_mae"}
    assert (report / "report.md").read_text().startswith("# M-PRTM evaluation")
    assert "Shapley contributions" in (report / "report.md").read_text()
    real = metrics["real_anatomy"]  # the shipped Sunnybrook cine subset, by default
    assert real["n_patients"] == 5 and real["n_slices"] == 30
    assert real["ci"][0] <= real["dice"] <= real["ci"][1]
    assert "## Real anatomy: Sunnybrook cine MR (not LGE)" in (report / "report.md").read_text()
    assert (report / "real_anatomy.png").is_file()
    contrib = json.loads((report / "extras.json").read_text())["modality_contributions"]
    assert set(contrib["mean_abs"]) == {"numeric", "text", "image"}
    assert all(0.0 < p < 1.0 for p in contrib["reference"].values())
    assert all(v >= 0.0 for m in contrib["mean_abs"].values() for v in m.values())
    rows = (report / "attribution.csv").read_text().splitlines()
    assert len(rows) == 1 + 15 and rows[0].startswith("patient_id,weight_numeric,")
    assert "death_numeric" in rows[0] and "macce_image" in rows[0]
    assert list(report.glob("roc_*.png")) and (report / "dice.png").is_file()


@pytest.mark.slow
def test_ensemble_train_then_evaluate(cohort: Path, tiny_bert: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "e.pt"
    rc = main(["train", "--data", str(cohort), "--out", str(ckpt), "--epochs", "1",
               "--fusion-epochs", "2", "--seed", "2", "--text-encoder", str(tiny_bert),
               "--quiet", *TINY, "--set", "ensemble=2",
               "--set", "seg_max_patients=20"])  # fmt: skip
    assert rc == 0
    assert load_checkpoint(ckpt).config.ensemble == 2
    report = tmp_path / "report"
    rc = main(["evaluate", "--data", str(cohort), "--checkpoint", str(ckpt), "--out",
               str(report), "--bootstrap", "20", "--quiet", "--no-real-anatomy"])  # fmt: skip
    assert rc == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert "real_anatomy" not in metrics and not (report / "real_anatomy.png").exists()
    assert "Real anatomy" not in (report / "report.md").read_text()
    members = json.loads((report / "extras.json").read_text())["ensemble_members"]
    assert len(members) == 2
    for r in members:
        assert set(r) <= set(OUTCOMES) and all(0.0 <= v <= 1.0 for v in r.values())
    assert set(metrics["fusion"]) == set(members[0])
    assert "Ensemble of 2 fusion networks" in (report / "report.md").read_text()


def test_bad_arguments_exit_2(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--data", str(cohort), "--out", str(tmp_path / "x.pt"), "--quiet"]
    assert main([*base, "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main([*base, "--set", "image_size=50"]) == 2
    assert main([*base, "--set", "seg_epochs=many"]) == 2
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["evaluate", "--data", str(cohort), "--checkpoint", str(tmp_path / "no.pt"),
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
