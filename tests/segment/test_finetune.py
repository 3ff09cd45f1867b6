"""``mprtm train-segmentation``: a fine-tuning run on tiny data changes the image network
only, writes a loadable new checkpoint with its provenance, and refuses wrong masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cds.cli import main as cli_main
from cds.segio import write_nifti, write_seg
from model.checkpoint import file_sha256, load_checkpoint
from model.finetune import split_series
from model.predictor import Predictor
from tests.segment.conftest import SiteSeries


def _site_dirs(site: list[SiteSeries], root: Path) -> tuple[Path, Path]:
    series, masks = root / "series", root / "masks"
    masks.mkdir(parents=True)
    for s in site:
        shutil.copytree(s.folder, series / s.uid)
        write_seg(s.ordered, s.truth, masks / f"{s.uid[-8:]}.dcm")
    return series, masks


def test_fine_tuning_changes_the_image_network_and_records_provenance(
    site: list[SiteSeries], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series, masks = _site_dirs(site, tmp_path)
    out = tmp_path / "site.pt"
    rc = cli_main(
        ["train-segmentation", "--series", str(series), "--masks", str(masks), "--init",
         str(checkpoint), "--out", str(out), "--epochs", "2", "--lr", "0.01", "--threads", "1",
         "--quiet"]
    )  # fmt: skip
    assert rc == 0
    assert "held-out Dice myocardium" in capsys.readouterr().out
    old, new = load_checkpoint(checkpoint), load_checkpoint(out)
    changed = [k for k in old.state_dict if not torch.equal(old.state_dict[k], new.state_dict[k])]
    assert changed and all(k.startswith("image.") for k in changed)
    assert any(".weight" in k for k in changed)
    report = new.metrics["site_fine_tuning"]
    assert report["init_checkpoint_sha256"] == file_sha256(checkpoint)
    assert len(report["masks_fingerprint"]) == 64
    assert report["counts"]["series_with_masks"] == len(site)
    assert report["counts"]["dicom_seg_files"] == len(site)
    assert report["counts"]["slices_annotated"] == sum(len(s.ordered) for s in site)
    train, held = split_series([s.uid for s in site], 0)
    assert (report["series_train"], report["series_held_out"]) == (len(train), len(held))
    assert set(report["held_out_dice_after"]) == {"dice_myocardium", "dice_enhancement"}
    assert new.metrics["val"] == old.metrics["val"]  # stage 2 metrics kept as they were
    # the quality gate's reference describes the new network's embeddings
    assert report["image_reference_refit"] and new.image_reference is not None
    assert old.image_reference is None or not torch.equal(
        old.image_reference["mean"], new.image_reference["mean"]
    )
    card = out.with_suffix(".md").read_text()
    assert "## Site fine-tuning of the image network" in card
    assert file_sha256(checkpoint) in card and report["masks_fingerprint"] in card
    assert "not re-fitted" in card
    predictor = Predictor.from_checkpoint(out, attribution=False)
    assert predictor.version != Predictor.from_checkpoint(checkpoint, attribution=False).version
    feats = predictor.encode_image(np.random.default_rng(0).random((4, 64, 64), np.float32))
    assert np.isfinite(feats.embedding).all() and 0.0 <= feats.fibrosis_burden <= 1.0


def test_fine_tuning_refuses_a_mask_of_another_geometry(
    site: list[SiteSeries], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series, masks = _site_dirs(site[:3], tmp_path)
    s = site[1]
    (masks / f"{s.uid[-8:]}.dcm").unlink()
    write_nifti(s.truth[:-1], masks / f"{s.uid}.nii.gz", np.eye(4))  # one slice short
    out = tmp_path / "site.pt"
    rc = cli_main(
        ["train-segmentation", "--series", str(series), "--masks", str(masks), "--init",
         str(checkpoint), "--out", str(out), "--epochs", "1", "--quiet"]
    )  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{s.uid}.nii.gz: shape" in err and "does not match series" in err
    assert not out.exists()


def test_fine_tuning_cannot_overwrite_its_initial_checkpoint(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(
        ["train-segmentation", "--series", str(tmp_path), "--masks", str(tmp_path), "--init",
         str(checkpoint), "--out", str(checkpoint)]
    )  # fmt: skip
    assert rc == 2 and "new version" in capsys.readouterr().err
