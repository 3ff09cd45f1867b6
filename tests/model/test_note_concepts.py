"""Unsupervised note concepts (ICA of sentence-type occurrence across patients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.note_concepts import NoteConcepts


def _cohort(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """n patients with up to 16 segments: two hidden traits, each written in one of 3
    phrasings (a fixed random embedding each) in most of a patient's 3 notes, plus filler
    sentence types present independently of everything else."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)  # phrasings are the same in every cohort
    phr = base.normal(size=(2, 3, 16))
    filler = base.normal(size=(10, 16))
    common = base.normal(size=16) * 3  # anisotropy: a direction shared by every sentence
    traits = rng.random((n, 2)) < 0.3
    x = np.zeros((n, 16, 16))
    for i in range(n):
        segs = [filler[j] for j in range(10) if rng.random() < 0.4]
        for t in range(2):
            if traits[i, t]:
                segs += [phr[t, rng.integers(3)] for _ in range(3) if rng.random() < 0.7]
        for s, v in enumerate(segs[:16]):
            x[i, s] = common + v + rng.normal(scale=0.05, size=16)
    return torch.tensor(x, dtype=torch.float32), traits


def test_concepts_recover_hidden_traits_without_labels() -> None:
    x, traits = _cohort(400, seed=1)
    nc = NoteConcepts(16, clusters=16, components=6)
    assert not nc(x).any()  # zeros until fitted
    stats = nc.fit(x, seed=0)
    assert stats["components"] == 6 and stats["clusters"] == 16 and 0 < stats["kept"] <= 16
    xt, tt = _cohort(300, seed=2)  # new patients, same phrasings
    scores = nc(xt).numpy()
    assert scores.shape == (300, 6) and np.isfinite(scores).all()
    for t in range(2):
        best = max(max(a, 1 - a) for a in (roc_auc_score(tt[:, t], scores[:, r]) for r in range(6)))
        assert best > 0.93, (t, best)
    train_scores = nc(x).numpy()
    assert np.allclose(train_scores.std(0), 1.0, atol=0.05)  # unit variance on the fit data


def test_concepts_are_deterministic_padding_safe_and_travel_in_the_state_dict() -> None:
    x, _ = _cohort(120, seed=3)
    a, b = NoteConcepts(16, 24, 4), NoteConcepts(16, 24, 4)
    a.fit(x, seed=5)
    b.fit(x, seed=5)
    assert torch.equal(a(x), b(x))
    y = x.clone()
    y[0] = 0  # a patient without text scores zero
    assert not a(y)[0].any()
    c = NoteConcepts(16, 24, 4)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c(x), a(x))


def test_too_little_text_leaves_concepts_off() -> None:
    nc = NoteConcepts(8, clusters=50, components=5)
    x = torch.zeros(2, 4, 8)
    x[0, 0] = 1.0
    assert nc.fit(x)["components"] == 0 and not bool(nc.fitted)
    assert not nc(torch.randn(3, 4, 8)).any()
    with pytest.raises(ValueError):
        NoteConcepts(8, clusters=1, components=2)
