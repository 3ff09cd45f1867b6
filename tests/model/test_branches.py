"""Numeric schema, text encoder (tiny random BERT), image branch helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.errors import ModelInputError, TextEncoderError
from model.image_branch import (
    burden_from_labels,
    crop_box,
    prepare_mask,
    prepare_volume,
    select_slices,
)
from model.numeric_branch import FeatureSchema, NumericEncoder
from model.text_branch import TextEmbeddingCache, TextEncoder


def test_schema_standardises_and_flags_missing() -> None:
    rows = [{"a": 1.0, "b": 10.0}, {"a": 3.0}, {"a": 5.0, "b": 30.0}, {"c": float("nan")}]
    s = FeatureSchema.fit(rows)
    assert s.names == ("a", "b")  # c never has a finite value
    x = s.transform([{"a": 3.0}, {}])
    assert x.shape == (2, 4)
    assert x[0, 0] == pytest.approx(0.0) and x[0, 2] == 0.0 and x[0, 3] == 1.0
    assert x[1].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert FeatureSchema.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        FeatureSchema.fit([])


def test_schema_log_transforms_skewed_features() -> None:
    rng = np.random.default_rng(0)
    rows = [{"bnp": float(v)} for v in np.exp(rng.normal(6, 1.5, 500))]
    s = FeatureSchema.fit(rows)
    assert s.log == (True,)
    assert np.abs(s.transform(rows)[:, 0]).max() <= 5.0


def test_numeric_encoder_shapes_and_errors() -> None:
    enc = NumericEncoder(6, 16, 8)
    assert enc(torch.randn(3, 6)).shape == (3, 8)
    with pytest.raises(ValueError):
        NumericEncoder(0, 16, 8)
    with pytest.raises(ValueError):
        NumericEncoder(6, 16, 8, dropout=1.5)


def test_text_encoder_chunks_long_text(tiny_bert: Path) -> None:
    enc = TextEncoder(str(tiny_bert), 0, window=16, max_chunks=3)
    assert enc.window == 16 and enc.frozen
    short = "furosemide 40 mg daily"
    long = " ".join(["bisoprolol 5 mg twice daily"] * 20)
    chunks, owner = enc._chunks([short, long])
    assert owner.count(0) == 1 and owner.count(1) == 3  # capped at max_chunks
    assert all(len(c) <= 16 for c in chunks)
    emb = enc.embed([short, long])
    assert emb.shape == (2, 32) and np.isfinite(emb).all()
    # batching does not change a text's embedding
    assert np.allclose(enc.embed([short])[0], emb[0], atol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters())
    assert enc.identity()["sha256"] and len(enc.identity()["sha256"]) == 64


def test_text_encoder_fine_tune_top_layers(tiny_bert: Path) -> None:
    enc = TextEncoder(str(tiny_bert), trainable_layers=1)
    trainable = {n.split(".")[2] for n, p in enc.bert.named_parameters() if p.requires_grad}
    assert trainable == {"1"}  # only encoder.layer.1
    with pytest.raises(ValueError):
        TextEmbeddingCache(enc)


def test_text_encoder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(TextEncoderError, match="not found"):
        TextEncoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError):
        TextEncoder(str(tmp_path / "empty"))
    with pytest.raises(ValueError):
        TextEncoder(str(tmp_path), trainable_layers=-1)


def test_text_cache_persists(tiny_bert: Path, tmp_path: Path) -> None:
    enc = TextEncoder(str(tiny_bert))
    cache = TextEmbeddingCache(enc, tmp_path / "cache")
    a = cache.get_many(["aspirin daily", "digoxin"])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    again = TextEmbeddingCache(enc, tmp_path / "cache").get_many(["digoxin", "aspirin daily"])
    assert np.array_equal(a[::-1], again)


def test_centre_crop_keeps_the_middle() -> None:
    vol = np.zeros((1, 40, 40), dtype=np.float32)
    vol[0, 10:30, 10:30] = 1.0  # the "heart" fills the central half
    assert crop_box(40, 40, 0.5) == (10, 10, 20, 20)
    x = prepare_volume(vol, 16, 4, crop=0.5)
    assert x.shape == (1, 1, 16, 16) and float(x.min()) == pytest.approx(1.0)
    m = prepare_mask(vol.astype(np.uint8) * 2, 16, crop=0.5)
    assert bool((m == 2).all())
    with pytest.raises(ValueError):
        crop_box(40, 40, 0.0)


def test_image_helpers() -> None:
    assert select_slices(3, 6).tolist() == [0, 1, 2]
    assert select_slices(10, 3).tolist() == [0, 4, 9]
    x = prepare_volume(np.random.rand(10, 48, 40).astype(np.float32), 32, 4)
    assert x.shape == (4, 1, 32, 32)
    m = prepare_mask(np.ones((2, 48, 40), dtype=np.uint8) * 2, 32)
    assert m.shape == (2, 32, 32) and int(m.max()) == 2
    labels = torch.tensor([[[0, 1], [2, 2]]])
    assert float(burden_from_labels(labels)) == pytest.approx(2 / 3)
    with pytest.raises(ModelInputError):
        prepare_volume(np.zeros((0, 32, 32)), 32, 4)
    with pytest.raises(ModelInputError, match="NaN"):
        prepare_volume(np.full((1, 32, 32), np.nan), 32, 4)
