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
from model.text_branch import SentencePooling, TextEmbeddingCache, TextEncoder, split_segments


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


def test_split_segments_lines_then_sentences() -> None:
    text = "Medications: bisoprolol 5 mg; ramipril.\nNote 2026-01-02: Mood low. Lives alone.\n\n"
    assert split_segments(text) == [
        "Medications: bisoprolol 5 mg; ramipril.",
        "Note 2026-01-02: Mood low.",
        "Lives alone.",
    ]
    assert split_segments("  \n ") == []


def test_text_encoder_embeds_each_segment(tiny_bert: Path) -> None:
    enc = TextEncoder(str(tiny_bert), 0, window=16, max_segments=3)
    assert enc.window == 16 and enc.frozen
    short = "furosemide 40 mg daily"
    long = "Bisoprolol 5 mg twice daily. " * 5 + "\n" + "ramipril " * 40
    assert len(enc.segments(long)) == 3  # capped at max_segments
    emb = enc.embed([short, long])
    assert emb.shape == (2, 3, 32) and np.isfinite(emb).all()
    assert np.abs(emb[0, 0]).sum() > 0 and not emb[0, 1:].any()  # one segment, then padding
    assert np.abs(emb[1]).sum(-1).min() > 0  # three real segments
    # a segment is embedded the same alone or among others, and batching changes nothing
    alone = enc.embed(["Bisoprolol 5 mg twice daily."])[0, 0]
    assert np.allclose(alone, emb[1, 0], atol=1e-5)
    assert np.allclose(enc.embed([short])[0], emb[0], atol=1e-5)
    # a segment longer than the window is embedded in chunks (still one row)
    assert enc.encode_segments(["ramipril " * 40]).shape == (1, 32)
    assert not any(p.requires_grad for p in enc.parameters())
    assert enc.identity()["sha256"] and len(enc.identity()["sha256"]) == 64


def test_sentence_pooling_masks_padding() -> None:
    torch.manual_seed(0)
    pool = SentencePooling(8, 16, dropout=0.0, concepts=8).eval()
    x = torch.randn(3, 5, 8)
    x[0, 2:] = 0  # two real segments
    x[2] = 0  # no text at all
    out, att, found = pool(x)
    assert out.shape == (3, 16) and att.shape == (3, 5) and torch.isfinite(out).all()
    assert found.shape == (3, 8) and (found >= 0).all() and not found[2].any()
    assert torch.allclose(att[0, :2].sum(), torch.tensor(1.0)) and not att[0, 2:].any()
    assert not att[2].any()
    # padding rows never change the result
    y = x.clone()
    y[0, 2:] = 0
    y[0, 2:] = 5.0  # padding content never leaks in ...
    y[0, 2:] = 0.0  # ... once it is zero again
    assert torch.allclose(pool(y)[0][0], out[0])
    z = x.clone()
    z[0, 0] *= 3.0  # segments are L2-normalised: scale does not matter
    assert torch.allclose(pool(z)[0][0], out[0], atol=1e-5)
    with pytest.raises(ValueError):
        pool(torch.randn(3, 8))


def test_sentence_pooling_whitening() -> None:
    torch.manual_seed(0)
    pool = SentencePooling(8, 16, dropout=0.0, concepts=4).eval()
    common = torch.randn(8) * 5.0  # anisotropic: every segment shares one direction
    x = common + torch.randn(6, 10, 8) * torch.linspace(0.1, 2.0, 8)
    x[0, 7:] = 0  # padding
    x[5] = 0  # no text
    before = pool(x)
    assert pool.fit_whitening(x, eps=1e-6) == 5 * 10 - 3
    rows = x.reshape(-1, 8)
    valid = rows.abs().sum(-1) > 0
    z = torch.nn.functional.normalize(rows[valid], dim=-1)
    w = (z - pool.white_mean) @ pool.white_matrix
    cov = torch.cov(w.T)
    assert torch.allclose(cov, torch.eye(8), atol=1e-3)  # whitened on the fitting data
    after = pool(x)
    assert not torch.allclose(after[0], before[0])  # the transform is applied ...
    assert not after[2][5].any() and not after[1][5].any()  # ... never to missing text
    assert not after[1][0, 7:].any()
    assert torch.allclose(pool.detector_scores(x), after[2])
    # the buffers travel in the state dict, so a loaded model whitens the same way
    other = SentencePooling(8, 16, dropout=0.0, concepts=4).eval()
    other.load_state_dict(pool.state_dict())
    assert torch.allclose(other(x)[0], after[0])
    with pytest.raises(ValueError, match="at least 2 text segments"):
        pool.fit_whitening(torch.zeros(2, 3, 8), eps=0.01)
    with pytest.raises(ValueError, match="eps"):
        pool.fit_whitening(x, eps=0.0)


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
    a = cache.get_many(["Aspirin daily. Digoxin.", "Digoxin."])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # one file per distinct segment
    assert np.array_equal(a[0, 1], a[1, 0])
    again = TextEmbeddingCache(enc, tmp_path / "cache").get_many(
        ["Digoxin.", "Aspirin daily. Digoxin."]
    )
    assert np.array_equal(a[::-1], again)
    assert np.allclose(a, enc.embed(["Aspirin daily. Digoxin.", "Digoxin."]), atol=1e-5)


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


def test_embed_encodes_shared_segments_once_and_matches_forward(tiny_bert: Path) -> None:
    enc = TextEncoder(str(tiny_bert))
    texts = [
        "Bisoprolol 5 mg daily. Lives alone. Dyspnoea on exertion.",
        "Lives alone.",
        "Furosemide 40 mg. Bisoprolol 5 mg daily.",
        "",
    ]
    seen: list[int] = []
    original = enc.encode_segments

    def counting(segments: list[str]) -> torch.Tensor:
        seen.append(len(segments))
        return original(segments)

    enc.encode_segments = counting  # type: ignore[method-assign]
    out = enc.embed(texts, batch_size=1)  # 8 segments per call
    distinct = {seg for t in texts for seg in enc.segments(t)}
    assert sum(seen) == len(distinct) < sum(len(enc.segments(t)) for t in texts)
    enc.encode_segments = original  # type: ignore[method-assign]
    with torch.inference_mode():
        direct = enc.eval()(texts).float().numpy()
    assert out.shape == direct.shape and np.allclose(out, direct, atol=1e-5)
    assert np.array_equal(out[0, 1], out[1, 0])  # "Lives alone." in both texts
