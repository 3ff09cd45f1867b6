"""Stage-2 ensembles (``cfg.ensemble``) and the stage-1 patient cap (``seg_max_patients``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model._seg_train import limit_patients
from model.checkpoint import load_checkpoint
from model.config import ModelConfig, preset
from model.errors import TrainingError
from model.mprtm import MPRTMEnsemble, build_network
from model.predictor import Predictor
from model.train import TrainResult, train_mprtm
from model.types import MODALITIES, OUTCOMES
from tests.model.helpers import OPEN_GATE, tiny_cohort, tiny_config, write_tiny_bert


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list]:
    root = tmp_path_factory.mktemp("ensemble")
    bert = write_tiny_bert(root / "bert")
    cfg = tiny_config(bert, crop=1.0, seg_epochs=1, fusion_epochs=3, ensemble=3)
    examples = tiny_cohort(40, seed=6)
    res = train_mprtm(examples, cfg, seed=3, out=root / "e.pt", progress=False, baselines=False)
    return res, examples


def test_ensemble_checkpoint_holds_members_and_one_image_branch(ensemble) -> None:  # type: ignore[no-untyped-def]
    res, _ = ensemble
    ck = load_checkpoint(res.path)
    assert ck.config.ensemble == 3
    keys = ck.state_dict
    assert any(k.startswith("image.") for k in keys)
    assert not any(".image." in k for k in keys)  # the members do not carry copies
    assert {k.split(".")[1] for k in keys if k.startswith("members.")} == {"0", "1", "2"}
    assert len(ck.metrics["val"]["ensemble_members"]) == 3
    assert "ensemble of 3 fusion networks" in res.path.with_suffix(".md").read_text()
    # the members were trained with different seeds: different weights
    w0, w1 = (keys[f"members.{i}.heads.outcomes.weight"] for i in (0, 1))
    assert not torch.equal(w0, w1)
    assert isinstance(build_network(ck.config), MPRTMEnsemble)


def test_ensemble_prediction_is_the_recalibrated_mean_member_logit(ensemble) -> None:  # type: ignore[no-untyped-def]
    res, examples = ensemble
    pred = Predictor.from_checkpoint(res.path, threads=1, batch_size=4, quality_rules=OPEN_GATE)
    net = pred.network
    assert isinstance(net, MPRTMEnsemble)
    full = next(e.input for e in examples if e.input.image is not None and e.input.text)
    inputs = [
        full,
        dataclasses.replace(full, patient_id="no-text", text=None),
        dataclasses.replace(full, patient_id="image-only", numeric={}, text=None),
    ]
    out = pred.predict(inputs)
    for p in out:
        assert all(0.0 < v < 1.0 for v in p.probabilities.values())
        assert sum(p.modality_weights.values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(p.cause_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        for o in OUTCOMES:  # the Shapley parts still add up to the ensemble's probability
            c = p.contributions[o]
            total = c["reference"] + sum(c[m] for m in MODALITIES)
            assert total == pytest.approx(p.probabilities[o], abs=1e-5)
    assert out[1].modality_weights["text"] == 0.0
    assert out[1].contributions["death"]["text"] == 0.0
    assert out[2].modality_weights == {"numeric": 0.0, "text": 0.0, "image": 1.0}
    # by hand from the members, for the full patient
    pred_one = Predictor(pred.checkpoint, net, pred.text_encoder, attribution=False)
    t = _batch(pred_one, [full])
    with torch.inference_mode():
        member_logits = torch.stack(
            [
                m(t["numeric"], t["text"], t["image"], t["present"])["logits"] * m.calib_scale
                + m.calib_bias
                for m in net.members
            ]
        ).mean(0)
        by_hand = torch.sigmoid(member_logits * net.calib_scale + net.calib_bias)[0]
    for j, o in enumerate(OUTCOMES):
        assert out[0].probabilities[o] == pytest.approx(float(by_hand[j]), abs=1e-5)


def _batch(pred: Predictor, inputs: list) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
    from model._batch import assemble

    inp = inputs[0]
    f = pred.encode_image(inp.image)
    image = np.concatenate([f.embedding, [f.fibrosis_burden]]).astype(np.float32)[None]
    text = pred.encode_texts([inp.text])
    return assemble(inputs, pred.schema, text, np.array([True]), image, np.array([True]))


def test_ensemble_rejects_encoders_it_would_have_to_share(tmp_path: Path) -> None:
    bert = write_tiny_bert(tmp_path / "bert")
    for change in ({"text_trainable_layers": 1}, {"joint": True}):
        cfg = tiny_config(bert, crop=1.0, ensemble=2, **change)
        with pytest.raises(TrainingError, match="ensemble > 1"):
            train_mprtm(tiny_cohort(12, seed=1), cfg, progress=False)


@pytest.mark.parametrize("bad", [0, 17])
def test_ensemble_size_is_validated(bad: int) -> None:
    with pytest.raises(ValueError, match="ensemble"):
        preset("small", ensemble=bad)
    with pytest.raises(ValueError, match="seg_max_patients"):
        preset("small", seg_max_patients=-1)


def test_presets_train_two_networks_unless_the_encoders_are_tuned() -> None:
    for name in ("small", "full"):
        assert preset(name).ensemble == 2
        assert preset(name, ensemble=3).ensemble == 3
        assert preset(name, text_trainable_layers=2).ensemble == 1
        assert preset(name, joint=True).ensemble == 1
    assert ModelConfig().ensemble == 1  # checkpoints written before the field meant 1


def test_stage1_patient_cap(tiny_bert: Path) -> None:
    examples = tiny_cohort(30, seed=2)
    usable = [e for e in examples if e.input.image is not None and e.masks is not None]
    assert len(usable) > 10
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert limit_patients(examples, 0, rng) == usable  # 0 keeps every usable patient
    assert limit_patients(examples, len(usable), rng) == usable
    assert rng.bit_generator.state == state  # nothing drawn below the cap
    kept = limit_patients(examples, 10, rng)
    assert len(kept) == 10 and set(map(id, kept)) <= set(map(id, usable))
    order = [usable.index(e) for e in kept]
    assert order == sorted(order)
    again = limit_patients(examples, 10, np.random.default_rng(0))
    assert [e.input.patient_id for e in again] == [e.input.patient_id for e in kept]


def test_stage1_cap_is_used_in_training(
    tiny_cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model._seg_train as seg

    seen: list[int] = []
    real = seg.collect_slices

    def counting(examples, *args):  # type: ignore[no-untyped-def]
        seen.append(len(examples))
        return real(examples, *args)

    monkeypatch.setattr(seg, "collect_slices", counting)
    examples = tiny_cohort(40, seed=5)
    cfg = dataclasses.replace(tiny_cfg, seg_max_patients=8, fusion_epochs=1)
    res = train_mprtm(examples, cfg, seed=1, progress=False, baselines=False)
    assert seen == [8, 2]  # training patients capped at 8, validation at 8 // 4
    assert res.checkpoint.history["seg_val_dice_enhancement"]
    # every patient with an image still gets an embedding: the stage-2 tensors are full
    assert res.checkpoint.config.seg_max_patients == 8
