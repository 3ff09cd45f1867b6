"""Heart localisation: boxes, crops that map back exactly, a trained localiser that finds
off-centre hearts, and checkpoints from before localisation keeping the centred crop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cds.synth._mr import draw_acquisition
from cds.synth.images import HeartGeometry, lge_volume
from model.config import ModelConfig, preset
from model.image_branch import ImageBranch, crop_box, prepare_mask, prepare_volume
from model.localise import (
    HeartLocaliser,
    box_from_mask,
    box_from_probability,
    paste_logits,
    train_localiser,
)
from model.types import LabelledExample, ModelInput


def _normalise(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img - lo) / (hi - lo), 0, 1).astype(np.float32)


def _examples(seeds: range, size: int = 96) -> list[LabelledExample]:
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        acq = dataclasses.replace(draw_acquisition(rng, 512), matrix=size)
        acq = dataclasses.replace(acq, pixel_mm=rng.uniform(300, 400) / size)
        sim = lge_volume(rng, HeartGeometry(rng.uniform(45, 70), 10.0, 0.1, True), acq, 8)
        inp = ModelInput(patient_id=f"p{seed}", image=_normalise(sim.image))
        out.append(LabelledExample(input=inp, labels={}, masks=sim.mask))
    return out


def test_box_from_mask_is_square_and_holds_the_heart() -> None:
    m = np.zeros((3, 100, 80), np.uint8)
    m[1, 10:30, 50:60] = 1
    top, left, h, w = box_from_mask(m, 1.5, 8)  # type: ignore[misc]
    assert h == w == 30
    assert top <= 10 and top + h >= 30 and left <= 50 and left + w >= 60
    assert box_from_mask(np.zeros((2, 9, 9)), 1.5, 8) is None


def test_box_from_probability_takes_the_largest_part() -> None:
    p = np.zeros((16, 16), np.float32)
    p[2:6, 2:6] = 0.9  # the heart
    p[12, 12] = 0.6  # a stray detection
    top, left, h, _ = box_from_probability(p, (128, 128), 1.0, 8)  # type: ignore[misc]
    assert (top, left, h) == (16, 16, 32)
    assert box_from_probability(p * 0.1, (128, 128), 1.5, 8) is None


def test_crop_and_paste_back_are_exact_even_outside_the_image() -> None:
    labels = np.zeros((2, 40, 40), np.uint8)
    labels[:, 2:10, 3:9] = 1
    labels[:, 4:6, 4:6] = 2
    for box in [(0, 0, 16, 16), (-4, -6, 16, 16), (30, 28, 16, 16)]:
        m = prepare_mask(labels, 16, box=box)  # 1:1 scale: the crop itself
        logits = torch.nn.functional.one_hot(m, 3).permute(0, 3, 1, 2).float()
        back = paste_logits(logits, box, (40, 40))
        top, left, h, w = box
        r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + h, 40), min(left + w, 40)
        expect = np.zeros_like(labels)
        expect[:, r0:r1, c0:c1] = labels[:, r0:r1, c0:c1]
        assert np.array_equal(back, expect), box
    # a scaled crop maps back to the same place (up to the resampling of the edges)
    x = prepare_volume(labels.astype(np.float32), 32, 2, box=(0, 0, 16, 16))
    assert x.shape == (2, 1, 32, 32)
    logits = torch.nn.functional.one_hot(prepare_mask(labels, 32, box=(0, 0, 16, 16)), 3)
    back = paste_logits(logits.permute(0, 3, 1, 2).float(), (0, 0, 16, 16), (40, 40))
    assert np.array_equal(back[:, :16, :16], labels[:, :16, :16])


def test_without_a_localiser_the_centred_crop_is_kept() -> None:
    old = ModelConfig.from_dict(
        {k: v for k, v in preset("small").to_dict().items() if k != "localiser"}
    )
    assert old.localiser == 0  # a checkpoint's config from before localisation
    branch = ImageBranch(64, 4, 3, (8, 16, 32), (1, 1, 1), 4, 2, crop=0.5)
    assert branch.localiser is None
    assert branch.crop_box(np.zeros((3, 128, 128), np.float32)) == crop_box(128, 128, 0.5)
    assert "localiser.net.0.0.weight" not in branch.state_dict()


def test_bad_localiser_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        HeartLocaliser(30)
    with pytest.raises(ValueError, match="localiser"):
        ModelConfig(localiser=20)
    with pytest.raises(ValueError, match="expected"):
        HeartLocaliser(32)(torch.zeros(1, 2, 32, 32))


@pytest.mark.slow
def test_trained_localiser_boxes_hold_off_centre_hearts() -> None:
    torch.manual_seed(0)
    branch = ImageBranch(64, 8, 3, (8, 16, 32), (1, 1, 1), 4, 2, crop=0.5, localiser=64, margin=1.7)
    assert branch.localiser is not None
    losses = train_localiser(
        branch.localiser, _examples(range(100, 160)), np.random.default_rng(0),
        torch.device("cpu"), epochs=20, progress=False,
    )  # fmt: skip
    assert losses[-1] < losses[0]
    centred = held = 0
    for ex in _examples(range(500, 512)):
        assert ex.masks is not None and ex.input.image is not None
        top, left, h, w = branch.crop_box(ex.input.image)
        rows, cols = np.nonzero((ex.masks >= 1).any(0))
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        held += inside.mean() >= 0.99
        # the centred crop of the old preset would have cut some of these hearts
        c_top, c_left, c_h, c_w = crop_box(96, 96, 0.5)
        in_c = (rows >= c_top) & (rows < c_top + c_h) & (cols >= c_left) & (cols < c_left + c_w)
        centred += in_c.mean() >= 0.99
    assert held >= 11, f"{held} of 12 boxes hold the whole heart"
    assert centred < held
