"""Myocardium Dice on real anatomy: the metric on hand-built cases, then the evaluation of a
tiny random checkpoint on the shipped Sunnybrook subset, alone and in ``mprtm evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cds.cli import main
from cds.realdata.sunnybrook import load_sunnybrook
from model.predictor import Predictor
from model.real_anatomy import dice_over_patients, evaluate_real_anatomy
from model.train import train_mprtm
from tests.model.helpers import tiny_cohort, tiny_config, write_tiny_bert


def _ring(n: int = 3, size: int = 16) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[:, 4:12, 4:12] = 1
    masks[:, 6:10, 6:10] = 0  # 48 myocardium pixels per slice
    return masks


def test_perfect_prediction_counts_enhancement_as_myocardium() -> None:
    true = _ring()
    pred = true * 2  # enhancement (2) everywhere the myocardium is
    res = dice_over_patients(pred, true, ["a", "a", "b"], n_boot=200)
    assert res["dice"] == 1.0 and res["ci"] == [1.0, 1.0]
    assert res["per_patient"] == {"a": 1.0, "b": 1.0} and res["per_slice"] == [1.0] * 3
    assert res["n_patients"] == 2 and res["n_slices"] == 3
    assert res["predicted_pixels"] == res["true_pixels"] == 3 * 48


def test_empty_prediction_scores_zero() -> None:
    true = _ring()
    res = dice_over_patients(np.zeros_like(true), true, ["a", "b", "c"], n_boot=100)
    assert res["dice"] == 0.0 and res["ci"] == [0.0, 0.0] and res["mean_patient_dice"] == 0.0
    assert res["predicted_pixels"] == 0


def test_half_of_the_ring_gives_two_thirds() -> None:
    true = _ring(2)
    pred = true.copy()
    pred[:, :8] = 0  # keep the lower half of the ring: 24 of 48 pixels, no false positive
    res = dice_over_patients(pred, true, ["a", "b"], n_boot=0)
    assert res["dice"] == pytest.approx(2 * 24 / (24 + 48))
    assert res["ci"] is None


def test_pooling_and_bootstrap_are_over_patients() -> None:
    """Patient a is perfect, patient b (two slices) gets nothing: pooled over pixels
    Dice = 2*48 / (48 + 3*48) = 0.5; the mean per patient is 0.5 too; resampling patients
    spans [0, 1]."""
    true = _ring(3)
    pred = true.copy()
    pred[1:] = 0
    res = dice_over_patients(pred, true, ["a", "b", "b"], n_boot=500, seed=1)
    assert res["dice"] == pytest.approx(0.5)
    assert res["per_patient"] == {"a": 1.0, "b": 0.0} and res["mean_patient_dice"] == 0.5
    assert res["ci"] == [0.0, 1.0]
    assert res == dice_over_patients(pred, true, ["a", "b", "b"], n_boot=500, seed=1)


def test_bad_arguments() -> None:
    true = _ring(2)
    with pytest.raises(ValueError, match="must be equal"):
        dice_over_patients(true[:1], true, ["a", "b"])
    with pytest.raises(ValueError, match="1 patient ids for 2 slices"):
        dice_over_patients(true, true, ["a"])
    with pytest.raises(ValueError, match="n_boot"):
        dice_over_patients(true, true, ["a", "b"], n_boot=-1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint whose image network keeps the central half (crop 0.5)."""
    root = tmp_path_factory.mktemp("real-anatomy")
    cfg = tiny_config(write_tiny_bert(root / "bert"), crop=0.5, seg_epochs=1, fusion_epochs=1)
    res = train_mprtm(
        tiny_cohort(20, seed=3), cfg, seed=1, out=root / "m.pt", progress=False, baselines=False
    )
    assert res.path is not None
    return res.path


def test_evaluation_of_a_tiny_checkpoint_on_sunnybrook(checkpoint: Path) -> None:
    pred = Predictor.from_checkpoint(checkpoint, threads=1)
    data = load_sunnybrook(pred.config.input_size)
    assert data.images.shape[1:] == (64, 64)  # 32 px network input / crop 0.5
    res = evaluate_real_anatomy(pred, data, n_boot=100)
    assert res["n_patients"] == 5 and res["n_slices"] == 30
    assert 0.0 <= res["ci"][0] <= res["dice"] <= res["ci"][1] <= 1.0
    assert res["true_pixels"] == int(data.masks.sum())
    # the slices went through the ordinary inference path, one series each
    feats = pred.encode_images([i[None] for i in data.images])
    seg = np.concatenate([f.segmentation for f in feats if f.segmentation is not None])
    assert res["predicted_pixels"] == int((seg >= 1).sum())
    assert seg.shape == (30, 64, 64)  # mapped back from the crop to the whole slice
    assert res == evaluate_real_anatomy(pred, data, n_boot=100)


def test_evaluate_real_anatomy_only_command(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out),
               "--real-anatomy-only", "--bootstrap", "50", "--threads", "1"])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "real_anatomy.json").read_text())
    assert res["n_slices"] == 30 and 0.0 <= res["dice"] <= 1.0
    assert set(res["per_patient"]) == {f"SCD0000{k}01" for k in range(1, 6)}
    md = (out / "real_anatomy.md").read_text()
    assert "## Real anatomy: Sunnybrook cine MR (not LGE)" in md
    assert "never evaluated" in md and f"{res['dice']:.3f}" in md
    assert (out / "real_anatomy.png").stat().st_size > 1000


def test_evaluate_needs_data_unless_real_anatomy_only(checkpoint: Path, tmp_path: Path) -> None:
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
               "--real-anatomy-only", "--real-anatomy", str(tmp_path / "absent")])  # fmt: skip
    assert rc == 2
