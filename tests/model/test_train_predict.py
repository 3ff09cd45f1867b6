"""Training, checkpoint round trip, compatibility checks and the Predictor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model.attribution import modality_contributions
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.errors import (
    CheckpointError,
    IncompatibleCheckpointError,
    ModelInputError,
    TrainingError,
)
from model.predictor import Predictor
from model.train import TrainResult, split_patients, train_mprtm
from model.types import MODALITIES, OUTCOMES, TIERS, ImageFeatures, ModelInput
from tests.model.helpers import OPEN_GATE, tiny_cohort, tiny_config, write_tiny_bert


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, ModelConfig, list]:
    root = tmp_path_factory.mktemp("train")
    bert = write_tiny_bert(root / "bert")
    cfg = tiny_config(bert, crop=1.0, seg_epochs=2, fusion_epochs=3)
    examples = tiny_cohort(40, seed=5)
    res = train_mprtm(examples, cfg, seed=7, out=root / "m.pt", progress=False, synthetic=True)
    return res, cfg, examples


def test_training_writes_checkpoint_card_and_curves(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, examples = trained
    assert res.path is not None and res.path.is_file()
    assert res.path.with_suffix(".md").read_text().startswith("# M-PRTM model card")
    assert res.path.with_suffix(".curves.png").stat().st_size > 1000
    ck = load_checkpoint(res.path)
    assert set(ck.thresholds) == set(OUTCOMES)
    assert set(ck.baselines) == {f"{m}_only" for m in MODALITIES}
    assert ck.synthetic_training_data and len(ck.data_fingerprint) == 64
    assert ck.text_encoder["name"] == "bert" and len(ck.text_encoder["sha256"]) == 64
    assert "torch" in ck.versions and ck.schema.names == ck.config.numeric_features
    test_ids = (
        {e.input.patient_id for e in examples} - set(ck.split["train"]) - set(ck.split["val"])
    )
    assert len(test_ids) == 10  # 25 % held out, never seen


def test_training_is_deterministic_under_a_seed(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res, cfg, examples = trained
    again = train_mprtm(examples, cfg, seed=7, out=None, progress=False, baselines=False)
    for k, v in again.checkpoint.state_dict.items():
        assert torch.equal(v, res.checkpoint.state_dict[k]), k


def test_split_is_patient_level_and_seeded() -> None:
    ids = [f"p{i}" for i in range(100)] + ["p1"]
    a, b = split_patients(ids, 1), split_patients(ids, 1)
    assert a == b and split_patients(ids, 2) != a
    assert sum(len(v) for v in a.values()) == 100
    assert not set(a["train"]) & set(a["test"])
    with pytest.raises(TrainingError):
        split_patients(["a", "b"], 0)


def test_predictor_round_trip_and_masks(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, examples = trained
    pred = Predictor.from_checkpoint(res.path, threads=1, batch_size=3, quality_rules=OPEN_GATE)
    assert pred.version.startswith("mprtm-") and len(pred.version) == 18
    assert pred.synthetic_training_data and "model card" in pred.card_markdown
    full = examples[0].input
    inputs = [
        full,
        dataclasses.replace(full, patient_id="no-text", text=None),
        dataclasses.replace(full, patient_id="no-image", image=None),
        dataclasses.replace(full, patient_id="image-only", numeric={}, text=None),
        dataclasses.replace(full, patient_id="text-only", numeric={}, image=None),
    ]
    out = pred.predict(inputs)
    assert [p.patient_id for p in out] == [i.patient_id for i in inputs]
    for p in out:
        assert set(p.probabilities) == set(OUTCOMES)
        assert all(0.0 < v < 1.0 for v in p.probabilities.values())
        assert all(t in TIERS for t in p.tiers.values())
        assert sum(p.modality_weights.values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(p.cause_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert out[1].modality_weights["text"] == 0.0
    assert out[2].modality_weights["image"] == 0.0 and out[2].fibrosis_burden is None
    assert out[3].modality_weights == {"numeric": 0.0, "text": 0.0, "image": 1.0}
    assert out[4].modality_weights["text"] == 1.0
    seg = out[0].image_features.segmentation
    assert seg is not None and seg.shape == full.image.shape and seg.dtype == np.uint8
    # same inputs, same answers (batch composition does not matter)
    single = pred.predict([inputs[2]])[0]
    assert single.probabilities == pytest.approx(out[2].probabilities, abs=1e-5)


def _value(pred: Predictor, t: dict[str, torch.Tensor], own: set[str]) -> torch.Tensor:
    """v(S) by hand: mean probability over the background, the patient's data for ``own``."""
    bg = pred.background
    assert bg is not None
    b = len(bg["numeric"])
    inputs = [t[m].expand(b, *t[m].shape[1:]) if m in own else bg[m] for m in MODALITIES]
    with torch.inference_mode():
        out = pred.network(*inputs, t["present"].expand(b, 3))
        return pred.network.calibrated_probabilities(out["logits"]).mean(0)


def _tensors(pred: Predictor, inp: ModelInput) -> dict[str, torch.Tensor]:
    from model._batch import assemble

    img = np.zeros((1, pred.network.image.embed_dim + 1), dtype=np.float32)
    if inp.image is not None:
        f = pred.encode_image(inp.image)
        img[0, :-1], img[0, -1] = f.embedding, f.fibrosis_burden
    txt = np.zeros((1, pred.config.text_max_segments, pred.config.text_dim), dtype=np.float32)
    if inp.text:
        txt[:] = pred.encode_texts([inp.text])
    return assemble([inp], pred.schema, txt, np.array([bool(inp.text)]), img,
                    np.array([inp.image is not None]))  # fmt: skip


def test_checkpoint_stores_a_background_of_complete_training_patients(trained) -> None:  # type: ignore[no-untyped-def]
    res, cfg, _ = trained
    bg = load_checkpoint(res.path).background
    assert bg is not None and set(bg) == set(MODALITIES)
    n = len(bg["numeric"])
    assert 0 < n <= cfg.attribution_background
    assert bg["text"].shape[0] == bg["image"].shape[0] == n
    assert (bg["text"].abs().sum((1, 2)) > 0).all()  # every typical patient has notes


def test_modality_contributions_add_up_and_match_the_coalitions(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, examples = trained
    pred = Predictor.from_checkpoint(res.path, threads=1, batch_size=4, quality_rules=OPEN_GATE)
    complete = [e.input for e in examples if e.input.image is not None and e.input.text]
    full, other = complete[0], complete[1]
    inputs = [
        full,
        other,
        dataclasses.replace(full, patient_id="no-text", text=None),
        dataclasses.replace(full, patient_id="no-image", image=None),
        dataclasses.replace(full, patient_id="image-only", numeric={}, text=None),
    ]
    out = {p.patient_id: p for p in pred.predict(inputs)}
    for p in out.values():
        assert set(p.contributions) == set(OUTCOMES)
        for o in OUTCOMES:
            c = p.contributions[o]
            assert set(c) == {"reference", *MODALITIES}
            total = c["reference"] + sum(c[m] for m in MODALITIES)
            assert total == pytest.approx(p.probabilities[o], abs=1e-5)  # efficiency
    # the reference depends only on which kinds of data the patient has
    a, b = out[full.patient_id].contributions, out[other.patient_id].contributions
    assert all(a[o]["reference"] == pytest.approx(b[o]["reference"], abs=1e-6) for o in OUTCOMES)
    assert any(a[o]["numeric"] != pytest.approx(b[o]["numeric"], abs=1e-4) for o in OUTCOMES)
    # a source the patient lacks contributes exactly nothing (null player)
    assert all(out["no-text"].contributions[o]["text"] == 0.0 for o in OUTCOMES)
    assert all(out["no-image"].contributions[o]["image"] == 0.0 for o in OUTCOMES)
    img_only = out["image-only"].contributions
    assert all(img_only[o]["numeric"] == img_only[o]["text"] == 0.0 for o in OUTCOMES)
    # by hand: image-only, one player; no-text, two players (numeric and image)
    t = _tensors(pred, inputs[4])
    v0 = _value(pred, t, set())
    for j, o in enumerate(OUTCOMES):
        assert img_only[o]["reference"] == pytest.approx(float(v0[j]), abs=1e-5)
        p = out["image-only"].probabilities[o]
        assert img_only[o]["image"] == pytest.approx(p - float(v0[j]), abs=1e-5)
    t = _tensors(pred, inputs[2])
    v0, vn, vi = (_value(pred, t, s) for s in (set(), {"numeric"}, {"image"}))
    for j, o in enumerate(OUTCOMES):
        c, p = out["no-text"].contributions[o], out["no-text"].probabilities[o]
        assert c["reference"] == pytest.approx(float(v0[j]), abs=1e-5)
        expect = 0.5 * ((float(vn[j]) - float(v0[j])) + (p - float(vi[j])))
        assert c["numeric"] == pytest.approx(expect, abs=1e-5)
    plain = Predictor.from_checkpoint(
        res.path, threads=1, attribution=False, quality_rules=OPEN_GATE
    )
    again = plain.predict([full])[0]
    assert again.contributions == {}
    assert again.probabilities == pytest.approx(out[full.patient_id].probabilities, abs=1e-5)


def test_attribution_needs_eval_mode(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, _ = trained
    pred = Predictor.from_checkpoint(res.path)
    net = pred.network.train()
    assert pred.background is not None
    with pytest.raises(RuntimeError, match="eval mode"):
        modality_contributions(
            net,
            torch.zeros(1, net.numeric_width),
            torch.zeros(1, 2, net.cfg.text_dim),
            torch.zeros(1, net.image.embed_dim + 1),
            torch.ones(1, 3, dtype=torch.bool),
            pred.background,
        )


def test_predictor_uses_image_cache(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, examples = trained
    pred = Predictor.from_checkpoint(res.path)
    inp = examples[1].input
    feats = pred.encode_image(inp.image)
    assert feats.embedding.shape == (pred.network.image.embed_dim,)
    assert 0.0 <= feats.fibrosis_burden <= 1.0
    assert pred.predict([inp])[0].probabilities == pytest.approx(
        pred.predict([inp], {inp.image_fingerprint: feats})[0].probabilities, abs=1e-5
    )
    fake = ImageFeatures(embedding=feats.embedding + 5.0, fibrosis_burden=0.9)
    cached = pred.predict([inp], {inp.image_fingerprint: fake})[0]
    assert cached.fibrosis_burden == pytest.approx(0.9)  # the cache entry was used
    bad = ImageFeatures(embedding=np.zeros(3, dtype=np.float32), fibrosis_burden=0.1)
    with pytest.raises(ModelInputError, match=inp.patient_id):
        pred.predict([inp], {inp.image_fingerprint: bad})


def test_predictor_rejects_patients_without_data(trained) -> None:  # type: ignore[no-untyped-def]
    res, _, _ = trained
    pred = Predictor.from_checkpoint(res.path)
    with pytest.raises(ModelInputError, match="empty-1"):
        pred.predict([ModelInput(patient_id="empty-1", numeric={"unknown": 1.0}, text="  ")])
    with pytest.raises(ModelInputError, match="bad-img"):
        pred.predict([ModelInput(patient_id="bad-img", image=np.zeros((2, 3), dtype=np.float32))])
    with pytest.raises(ValueError):
        Predictor.from_checkpoint(res.path, device="tpu")
    with pytest.raises(ValueError):
        Predictor.from_checkpoint(res.path, threads=-1)


def test_incompatible_checkpoints_fail_clearly(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res, _, _ = trained
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(IncompatibleCheckpointError, match="not an M-PRTM checkpoint"):
        load_checkpoint(other)
    blob = torch.load(res.path, weights_only=True)
    blob["format_version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(IncompatibleCheckpointError, match="format 99"):
        load_checkpoint(tmp_path / "future.pt")
    # weights that do not fit the config
    ck = load_checkpoint(res.path)
    ck.state_dict = {k: v for k, v in ck.state_dict.items() if not k.startswith("heads.")}
    save_checkpoint(ck, tmp_path / "cut.pt")
    with pytest.raises(IncompatibleCheckpointError, match="do not fit"):
        Predictor.from_checkpoint(tmp_path / "cut.pt")
    # a different text encoder than the one trained with
    other_bert = write_tiny_bert(tmp_path / "other-bert", seed=99)
    with pytest.raises(IncompatibleCheckpointError, match="sha256"):
        Predictor.from_checkpoint(res.path, text_encoder_path=str(other_bert))


@pytest.mark.parametrize("version", [2, 3, 4])
def test_older_checkpoint_formats_still_load(tmp_path: Path, version: int) -> None:
    """Format 2 had neither text whitening nor note concepts, formats 2 and 3 only a
    full-rank linear path, formats 2 to 4 no ensembles, no stage-1 cap and no
    attribution background: a copy in the old format gives identical predictions (and
    no contributions)."""
    bert = write_tiny_bert(tmp_path / "bert")
    cfg = tiny_config(
        bert, crop=1.0, seg_epochs=1, fusion_epochs=2, note_concepts=0, shortcut_rank=0
    )
    examples = tiny_cohort(24, seed=6)
    res = train_mprtm(examples, cfg, seed=2, out=tmp_path / "new.pt", progress=False)
    blob = torch.load(res.path, weights_only=True)
    old = dict(blob)
    old["format_version"] = version
    del old["background"]
    dropped = {"ensemble", "seg_max_patients", "attribution_background"}
    if version <= 3:
        dropped |= {"shortcut_rank"}
    if version == 2:
        dropped |= {"note_concepts", "note_clusters", "text_whiten"}
    old["config"] = {k: v for k, v in blob["config"].items() if k not in dropped}

    def strip(st: dict) -> dict:  # type: ignore[type-arg]
        return {k: v for k, v in st.items() if not k.startswith("text_pool.white_")}

    if version == 2:
        old["state_dict"] = strip(blob["state_dict"])
        old["baselines"] = {k: strip(v) for k, v in blob["baselines"].items()}
    torch.save(old, tmp_path / "old.pt")
    x = [e.input for e in examples[:3]]
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.background is None and loaded.config.seg_max_patients == 0
    old_pred = Predictor.from_checkpoint(tmp_path / "old.pt")
    a = old_pred.predict(x)
    b = Predictor.from_checkpoint(res.path).predict(x)
    assert [r.probabilities for r in a] == [r.probabilities for r in b]
    assert all(r.contributions == {} for r in a) and all(r.contributions for r in b)
    # an old checkpoint's attribution can be switched on with typical patients drawn now
    assert old_pred.build_background([e.input for e in examples]) > 0
    for r in old_pred.predict(x):
        c = r.contributions["death"]
        total = c["reference"] + sum(c[m] for m in MODALITIES)
        assert total == pytest.approx(r.probabilities["death"], abs=1e-5)


def test_text_whitening_is_fitted_and_shared_with_the_text_baseline(tmp_path: Path) -> None:
    bert = write_tiny_bert(tmp_path / "bert")
    cfg = tiny_config(bert, crop=1.0, seg_epochs=1, fusion_epochs=2, text_whiten=0.01)
    res = train_mprtm(tiny_cohort(24, seed=4), cfg, seed=1, out=tmp_path / "w.pt", progress=False)
    ck = load_checkpoint(tmp_path / "w.pt")
    st = ck.state_dict
    assert bool(st["text_pool.white_on"]) and st["text_pool.white_mean"].abs().sum() > 0
    w = st["text_pool.white_matrix"]
    assert not torch.allclose(w, torch.eye(len(w)))
    base = ck.baselines["text_only"]
    assert torch.equal(base["text_pool.white_matrix"], st["text_pool.white_matrix"])
    assert bool(base["text_pool.white_on"])
    for k in ("note_concepts.centroids", "note_concepts.unmix", "note_concepts.fitted"):
        assert torch.equal(base[k], st[k]), k  # the note concepts are shared too
    out = Predictor.from_checkpoint(res.path).predict([tiny_cohort(2, seed=9)[0].input])
    assert np.isfinite(list(out[0].probabilities.values())).all()
    # off by default: the trained fixture's pooling is the plain normalisation
    assert ModelConfig().text_whiten == 0.0


def test_fine_tuned_text_and_joint_training(tmp_path: Path) -> None:
    from model.config import preset

    bert = write_tiny_bert(tmp_path / "bert")
    cfg = preset(
        "small", image_size=32, max_slices=3, crop=1.0, enc_dims=(8, 16, 16), embed_dim=32,
        fusion_heads=2,
        numeric_hidden=16, text_encoder=str(bert), text_window=32, seg_epochs=1, fusion_epochs=2,
        seg_batch=8, fusion_batch=16, text_trainable_layers=1, joint=True,
    )  # fmt: skip
    examples = tiny_cohort(24, seed=2)
    res = train_mprtm(
        examples, cfg, seed=3, out=tmp_path / "ft.pt", progress=False, baselines=False
    )
    ck = load_checkpoint(tmp_path / "ft.pt")
    assert ck.text_encoder_state is not None
    original = write_tiny_bert(tmp_path / "bert-copy")  # same seed: same weights file
    from transformers import AutoModel

    before = AutoModel.from_pretrained(original).state_dict()
    assert not all(torch.equal(v, ck.text_encoder_state[k]) for k, v in before.items())
    pred = Predictor.from_checkpoint(res.path)
    out = pred.predict([examples[0].input])
    assert np.isfinite(list(out[0].probabilities.values())).all()
