"""The image quality gate on hand-built segmentations, and what the predictor does with an
unusable series (``model/image_quality.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.image_quality import ImageReference, QualityRules, assess
from model.predictor import Predictor
from model.train import train_mprtm
from tests.model.helpers import OPEN_GATE, tiny_cohort, tiny_config, write_tiny_bert

SIZE = 64
SPACING = 1.5  # mm per pixel: a ring of inner radius 15 px is a 45 mm cavity
RULES = QualityRules()


def _annulus(r_in: float, r_out: float, cy: float = 32, cx: float = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(yy - cy, xx - cx)
    return (r >= r_in) & (r < r_out)


def _logits(labels: np.ndarray, sharpness: float = 12.0) -> torch.Tensor:
    """(S, H, W) labels -> confident (S, 3, H, W) logits."""
    onehot = np.eye(3, dtype=np.float32)[labels]  # (S, H, W, 3)
    return torch.from_numpy(onehot).permute(0, 3, 1, 2) * sharpness


def _stack(*slices: np.ndarray) -> np.ndarray:
    return np.stack(slices).astype(np.int64)


def _ring_slice() -> np.ndarray:
    lab = np.zeros((SIZE, SIZE), dtype=np.int64)
    lab[_annulus(15, 21)] = 1
    return lab


def test_one_ring_per_slice_is_usable() -> None:
    labels = _stack(*[_ring_slice() for _ in range(6)])
    q = assess(_logits(labels), spacing_mm=SPACING, rules=RULES)
    assert q.usable and q.reason is None
    assert q.signals["ring"] == 1.0
    assert q.signals["wall_mm_median"] == pytest.approx(6 * SPACING, abs=1.0)
    assert q.signals["lv_diameter_mm_max"] == pytest.approx(30 * SPACING, abs=2.0)
    assert q.quality > 0.8


def test_a_disc_is_no_ring() -> None:
    disc = np.zeros((SIZE, SIZE), dtype=np.int64)
    disc[_annulus(0, 20)] = 1
    q = assess(_logits(_stack(*[disc] * 6)), spacing_mm=SPACING, rules=RULES)
    assert not q.usable
    assert q.reason is not None and q.reason.startswith("no plausible left-ventricular ring on 6")
    assert q.quality == 0.0


def test_nothing_segmented_is_no_myocardium() -> None:
    q = assess(_logits(np.zeros((4, SIZE, SIZE), dtype=np.int64)), spacing_mm=None, rules=RULES)
    assert not q.usable and q.reason == "no left-ventricular myocardium found"


def test_two_rings_are_refused() -> None:
    two = np.zeros((SIZE, SIZE), dtype=np.int64)
    two[_annulus(6, 10, cy=20, cx=16)] = 1
    two[_annulus(6, 10, cy=44, cx=48)] = 1
    q = assess(_logits(_stack(*[two] * 5)), spacing_mm=SPACING, rules=RULES)
    assert not q.usable
    assert q.reason is not None and "5 with two rings" in q.reason
    assert q.signals["slices_with_two_rings"] == 5


def test_the_apex_and_the_outflow_tract_are_tolerated() -> None:
    disc = np.zeros((SIZE, SIZE), dtype=np.int64)
    disc[_annulus(0, 10)] = 1  # apex: a disc
    open_ring = _ring_slice()
    open_ring[:, 30:34] = 0  # outflow tract: the ring is open
    labels = _stack(disc, *[_ring_slice()] * 4, open_ring)
    q = assess(_logits(labels), spacing_mm=SPACING, rules=RULES)
    assert q.usable, q.reason
    assert q.signals["ring"] == pytest.approx(4 / 6)


def test_enhancement_outside_the_myocardium_is_refused() -> None:
    sl = _ring_slice()
    sl[_annulus(15, 18)] = 2  # subendocardial scar: inside the ring, fine
    ok = assess(_logits(_stack(*[sl] * 4)), spacing_mm=SPACING, rules=RULES)
    assert ok.usable and ok.signals["enhancement_outside"] == 0.0
    bad = sl.copy()
    bad[0:4, 0:50] = 2  # a bright blob in the chest wall called "enhancement"
    q = assess(_logits(_stack(*[bad] * 4)), spacing_mm=SPACING, rules=RULES)
    assert not q.usable
    assert q.reason is not None and q.reason.startswith("enhancement outside the myocardium")


def test_physical_size_rules_use_the_spacing() -> None:
    labels = _stack(*[_ring_slice()] * 4)
    tiny = assess(_logits(labels), spacing_mm=0.3, rules=RULES)  # a 9 mm cavity: no LV
    assert not tiny.usable and tiny.reason is not None and "LV" in tiny.reason
    assert "outside" in tiny.reason
    huge = assess(_logits(labels), spacing_mm=8.0, rules=RULES)  # a 48 mm wall
    assert not huge.usable and huge.reason is not None
    assert huge.reason.startswith("LV wall thickness 48 mm") or "ring" in huge.reason
    unknown = assess(_logits(labels), spacing_mm=None, rules=RULES)
    assert unknown.usable and "wall_mm_median" not in unknown.signals


def test_uncertain_and_unstable_segmentations_are_refused() -> None:
    labels = _stack(*[_ring_slice()] * 4)
    vague = assess(_logits(labels, sharpness=0.3), spacing_mm=SPACING, rules=RULES)
    assert not vague.usable
    assert vague.reason is not None and vague.reason.startswith("segmentation uncertain")
    shifted = np.roll(labels, 12, axis=2)  # the mirror pass found the ring elsewhere
    q = assess(_logits(labels), spacing_mm=SPACING, rules=RULES, flipped_logits=_logits(shifted))
    assert not q.usable
    assert q.reason is not None and q.reason.startswith("segmentation unstable")
    same = assess(_logits(labels), spacing_mm=SPACING, rules=RULES, flipped_logits=_logits(labels))
    assert same.usable and same.signals["flip_agreement"] == 1.0


def test_familiarity_against_a_reference() -> None:
    rng = np.random.default_rng(0)
    train, held = rng.normal(size=(200, 16)), rng.normal(size=(60, 16))
    ref = ImageReference.fit(train, held)
    assert ref is not None and ref.n == 200
    near = float(np.quantile([ref.ratio(e) for e in held], 0.5))
    assert 0.3 < near < 1.0
    assert ref.ratio(np.full(16, 8.0)) > 3.0
    back = ImageReference.from_dict(ref.to_dict())
    assert back.ratio(held[0]) == pytest.approx(ref.ratio(held[0]), rel=1e-5)
    labels = _stack(*[_ring_slice()] * 4)
    far = assess(_logits(labels), spacing_mm=SPACING, rules=RULES, ood_ratio=5.0)
    assert not far.usable
    assert far.reason is not None and far.reason.startswith("image unlike the training images")
    assert far.signals["familiarity"] == pytest.approx(0.2)
    assert ImageReference.fit(train[:5], held) is None


def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="max_entropy"):
        QualityRules(max_entropy=1.5)
    with pytest.raises(ValueError, match="wall_mm"):
        QualityRules(wall_mm=(30.0, 2.0))
    with pytest.raises(ValueError, match="max_ood_ratio"):
        QualityRules(max_ood_ratio=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("gate")
    bert = write_tiny_bert(root / "bert")
    cfg = tiny_config(bert, crop=1.0, seg_epochs=1, fusion_epochs=2)
    examples = tiny_cohort(24, seed=5)
    res = train_mprtm(examples, cfg, seed=1, out=root / "m.pt", progress=False, baselines=False)
    assert res.path is not None
    return res.path, [e.input for e in examples]


def test_checkpoint_stores_the_training_embedding_reference(trained) -> None:  # type: ignore[no-untyped-def]
    path, _ = trained
    ref = load_checkpoint(path).image_reference
    assert ref is not None and ref["n"] >= 8 and ref["scale"] > 0
    assert tuple(ref["precision"].shape) == (ref["mean"].shape[0],) * 2


def test_an_unusable_series_is_a_missing_image(trained) -> None:  # type: ignore[no-untyped-def]
    path, inputs = trained
    full = next(i for i in inputs if i.image is not None and i.numeric)
    gated = Predictor.from_checkpoint(path, threads=1, attribution=False)
    noise = np.random.default_rng(3).uniform(0, 1, full.image.shape).astype(np.float32)
    refused = gated.encode_image(noise, 1.5)
    assert not refused.usable and refused.quality_reason
    with_noise = dataclasses.replace(full, patient_id="noise", image=noise, image_fingerprint="n")
    without = dataclasses.replace(full, patient_id="none", image=None, image_fingerprint=None)
    a, b = gated.predict([with_noise, without])
    assert a.modality_weights["image"] == 0.0
    assert a.fibrosis_burden is None
    assert a.image_features is not None and not a.image_features.usable
    for o, p in b.probabilities.items():  # exactly the patient without MRI
        assert a.probabilities[o] == pytest.approx(p, abs=1e-6)
    # the same series through an open gate is used: the gate, not the network, refused it
    opened = Predictor.from_checkpoint(path, threads=1, attribution=False, quality_rules=OPEN_GATE)
    [c] = opened.predict([with_noise])
    assert c.modality_weights["image"] > 0.0 and c.fibrosis_burden is not None
    image_only = dataclasses.replace(with_noise, numeric={}, text=None)
    with pytest.raises(Exception, match="MRI could not be analysed"):
        gated.predict([image_only])
