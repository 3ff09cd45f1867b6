"""Fusion: modality weights, masking, the learned query, the full network."""

from __future__ import annotations

import pytest
import torch

from model.config import ModelConfig, preset
from model.fusion import ModalityFusion
from model.mprtm import MPRTM, SharedRiskLinear, build_model


def test_missing_modalities_get_exactly_zero_weight() -> None:
    torch.manual_seed(0)
    fus = ModalityFusion(16, 2, 3, 1, 0.0).eval()
    tokens = torch.randn(5, 3, 16)
    present = torch.tensor(
        [[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool
    )
    out, w = fus(tokens, present)
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    assert torch.all(w[~present] == 0.0)
    assert torch.allclose(w.sum(1), torch.ones(5))
    assert w[3, 2] == 1.0


def test_missing_modality_values_do_not_leak() -> None:
    torch.manual_seed(0)
    fus = ModalityFusion(16, 2, 3, 1, 0.0).eval()
    tokens = torch.randn(1, 3, 16)
    present = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    other = tokens.clone()
    other[0, 1] = 100.0  # the absent text row changes
    assert torch.allclose(fus(tokens, present)[0], fus(other, present)[0])


def test_all_missing_and_bad_mask_raise() -> None:
    fus = ModalityFusion(16, 2, 3, 1)
    with pytest.raises(ValueError, match="at least one modality"):
        fus(torch.randn(2, 3, 16), torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        fus(torch.randn(2, 3, 16), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        ModalityFusion(15, 2, 3, 1)
    with pytest.raises(ValueError):
        ModalityFusion(16, 2, 3, 3)


def test_mprtm_outputs_and_determinism(tiny_cfg: ModelConfig) -> None:
    def run() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        net = build_model(tiny_cfg).eval()
        g = torch.Generator().manual_seed(4)
        b = 4
        present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
        return net(
            torch.randn(b, 8, generator=g),
            torch.randn(b, tiny_cfg.text_max_segments, tiny_cfg.text_dim, generator=g),
            torch.randn(b, net.image.embed_dim + 1, generator=g),
            present,
        )

    a, b = run(), run()
    assert a["logits"].shape == (4, 5)
    assert a["cause_logits"].shape == (4, len(tiny_cfg.causes))
    assert a["burden"].shape == (4,) and a["weights"].shape == (4, 3)
    for k in a:
        assert torch.isfinite(a[k]).all()
        assert torch.equal(a[k], b[k])
    assert a["weights"][1, 1] == 0 and a["weights"][2, 0] == 0 and a["weights"][3, 2] == 0
    assert a["aux_logits"].shape == (4, 3, 5)
    assert a["text_attention"].shape == (4, tiny_cfg.text_max_segments)
    assert torch.allclose(a["text_attention"].sum(1), torch.ones(4))


def _randomize_linear_path(net: MPRTM) -> None:
    assert net.shortcut is not None
    for p in net.shortcut.parameters():
        torch.nn.init.normal_(p)


@pytest.mark.parametrize("rank", [0, 2])
def test_linear_shortcut_ignores_missing_modalities(tiny_cfg: ModelConfig, rank: int) -> None:
    import dataclasses

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_cfg, linear_shortcut=True, shortcut_rank=rank)
    net = build_model(cfg).eval()
    _randomize_linear_path(net)
    present = torch.tensor([[0, 1, 0]], dtype=torch.bool)
    text = torch.randn(1, tiny_cfg.text_max_segments, tiny_cfg.text_dim)
    img = torch.randn(1, net.image.embed_dim + 1)
    a = net(torch.randn(1, 8), text, img, present)
    b = net(torch.randn(1, 8), text, img + 1.0, present)  # absent inputs change
    assert torch.allclose(a["logits"], b["logits"])
    assert a["weights"][0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("rank", [0, 2])
def test_linear_only_path_equals_full_network_without_deep_head(
    tiny_cfg: ModelConfig, rank: int
) -> None:
    """Phase A skips the deep branches; its logits must be what the full network adds."""
    import dataclasses

    torch.manual_seed(1)
    cfg = dataclasses.replace(tiny_cfg, linear_shortcut=True, shortcut_rank=rank)
    net = build_model(cfg).eval()
    _randomize_linear_path(net)
    torch.nn.init.zeros_(net.heads.outcomes.weight)
    torch.nn.init.zeros_(net.heads.outcomes.bias)
    g = torch.Generator().manual_seed(2)
    text = torch.randn(3, tiny_cfg.text_max_segments, tiny_cfg.text_dim, generator=g)
    text[0, 2:] = 0.0  # padding segments
    args = (
        torch.randn(3, 8, generator=g),
        text,
        torch.randn(3, net.image.embed_dim + 1, generator=g),
        torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0]], dtype=torch.bool),
    )
    full = net(*args)["logits"]
    net.use_deep = False
    fast = net(*args)
    assert torch.allclose(fast["logits"], full, atol=1e-6)
    assert fast["weights"].shape == (3, 3) and fast["cause_logits"].shape[0] == 3
    assert torch.count_nonzero(fast["logits"]) > 0


def test_config_validation_and_round_trip() -> None:
    cfg = preset("small", numeric_features=("a",))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert preset("full").image_size == 224
    assert preset("full").enc_dims == (128, 320, 512)
    for bad in ({"image_size": 50}, {"embed_dim": 250}, {"first_stride": 3}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            preset("small", **bad)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("medium")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="numeric_features"):
        build_model(preset("small"))


def test_auxiliary_loss_counts_present_modalities_only() -> None:
    from model._fusion_train import fusion_loss

    y = torch.tensor([[1.0, 0.0, float("nan"), 1.0, 0.0]] * 2)
    batch = {"y": y, "cause": torch.full((2,), -1), "burden": torch.full((2,), float("nan"))}
    present = torch.tensor([[True, False, True], [True, True, False]])
    aux = torch.zeros(2, 3, 5)
    out = {"logits": torch.zeros(2, 5), "aux_logits": aux}
    base, bce = fusion_loss(out, batch, present, aux_weight=0.5)
    assert torch.isfinite(base) and base > bce  # the auxiliary heads add a loss
    absent = aux.clone()
    absent[0, 1] = 9.0  # text of patient 0 and image of patient 1 are absent
    absent[1, 2] = -9.0
    same, _ = fusion_loss({**out, "aux_logits": absent}, batch, present, aux_weight=0.5)
    assert torch.allclose(same, base)
    changed = aux.clone()
    changed[0, 0] = 9.0
    assert fusion_loss({**out, "aux_logits": changed}, batch, present, 0.5)[0] > base
    off, _ = fusion_loss({**out, "aux_logits": changed}, batch, present, aux_weight=0.0)
    assert torch.allclose(off, bce)


def test_backfit_phase_never_raises_the_validation_loss(tiny_cfg: ModelConfig) -> None:
    """Phase C re-fits the linear path after phase B and keeps phase B's state unless the
    validation loss drops, so the trained model is at least as good as phase B's best."""
    import dataclasses

    from model._fusion_train import evaluate_loss, train_fusion

    cfg = dataclasses.replace(tiny_cfg, linear_shortcut=True, backfit=True, patience=2)
    g = torch.Generator().manual_seed(5)

    def data(n: int) -> dict[str, torch.Tensor]:
        numeric = torch.randn(n, 8, generator=g)
        risk = numeric[:, 0] - numeric[:, 1]
        y = (risk[:, None] + torch.randn(n, 5, generator=g) > 0).float()
        return {
            "numeric": numeric,
            "text": torch.randn(n, cfg.text_max_segments, cfg.text_dim, generator=g),
            "image": torch.randn(n, 2 * cfg.enc_dims[2] + 1, generator=g),
            "present": torch.ones(n, 3, dtype=torch.bool),
            "y": y,
            "cause": torch.full((n,), -1, dtype=torch.long),
            "burden": torch.full((n,), float("nan")),
        }

    torch.manual_seed(0)
    net = build_model(cfg)
    train, val = data(64), data(32)
    hist = train_fusion(net, train, val, cfg, seed=0, epochs=4, progress=False)
    assert hist["backfit_val_loss"] and hist["wide_val_loss"]
    final = evaluate_loss(net, val, None)
    # an epoch counts as better only when it lowers the loss by more than 1e-4 (min delta)
    assert final <= min(hist["val_loss"]) + 1e-4
    assert all(p.requires_grad for n, p in net.named_parameters() if not n.startswith("image."))


def test_shared_risk_linear_starts_at_zero_and_composes() -> None:
    torch.manual_seed(0)
    lin = SharedRiskLinear(12, 5, 2)
    x = torch.randn(7, 12)
    assert torch.count_nonzero(lin(x)) == 0  # starts where the full-rank path starts
    torch.nn.init.normal_(lin.up.weight)
    torch.nn.init.normal_(lin.up.bias)
    assert lin.weight.shape == (5, 12)
    assert torch.linalg.matrix_rank(lin.weight) == 2
    assert torch.allclose(lin(x), x @ lin.weight.T + lin.up.bias, atol=1e-5)


def test_sparsity_penalty_is_a_group_lasso_over_numeric_inputs(tiny_cfg: ModelConfig) -> None:
    import dataclasses

    from model._fusion_train import sparsity_penalty

    net = build_model(dataclasses.replace(tiny_cfg, shortcut_rank=2))
    assert isinstance(net.shortcut, SharedRiskLinear)
    with torch.no_grad():
        net.shortcut.down.weight.zero_()
        net.shortcut.down.weight[:, 0] = torch.tensor([3.0, 4.0])  # numeric input 0: norm 5
        net.shortcut.down.weight[0, net.numeric_width] = 100.0  # not numeric: not penalised
        net.shortcut.up.weight.fill_(1.0)
    expected = 5.0 + net.shortcut.up.weight.numel()
    assert float(sparsity_penalty(net).detach()) == pytest.approx(expected, rel=1e-5)
    full = build_model(dataclasses.replace(tiny_cfg, shortcut_rank=0))
    assert isinstance(full.shortcut, torch.nn.Linear)
    with torch.no_grad():
        full.shortcut.weight.fill_(-2.0)
    assert float(sparsity_penalty(full).detach()) == pytest.approx(2.0 * 5 * full.numeric_width)


def test_shared_scores_help_the_rare_outcome() -> None:
    """Five outcomes driven by one risk direction, one of them rare: estimating that
    direction jointly (rank 1) ranks held-out patients for the rare outcome better than
    fitting it alone (the reason for ``shortcut_rank``)."""
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    n, p = 600, 40
    x = torch.randn(2 * n, p, generator=g)
    direction = torch.zeros(p)
    direction[:6] = torch.tensor([1.0, -0.8, 0.6, 0.5, -0.4, 0.3])
    score = x @ direction
    bias = torch.tensor([0.0, -0.5, -1.0, -1.5, -4.0])  # the last outcome is rare
    y = torch.bernoulli(torch.sigmoid(score[:, None] + bias), generator=g)

    def held_out_auroc(model: torch.nn.Module) -> float:
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(300):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[:n]), y[:n])
            opt.zero_grad()
            (loss + 1e-3 * sum((q**2).sum() for q in model.parameters())).backward()
            opt.step()
        with torch.no_grad():
            return float(roc_auc_score(y[n:, 4].numpy(), model(x[n:])[:, 4].numpy()))

    torch.manual_seed(0)
    alone = held_out_auroc(torch.nn.Linear(p, 5))
    shared = held_out_auroc(SharedRiskLinear(p, 5, 1))
    assert shared > alone + 0.02


@pytest.mark.parametrize("members", [1, 2])
def test_precomputed_text_features_give_the_same_output(
    tiny_cfg: ModelConfig, members: int
) -> None:
    """The attribution pools each text once and passes rows of the result to forward:
    that must be what forward computes from the repeated texts themselves."""
    import dataclasses

    from model.mprtm import MPRTMEnsemble, build_network

    torch.manual_seed(5)
    cfg = dataclasses.replace(tiny_cfg, ensemble=members, note_concepts=3, note_clusters=4)
    net = build_network(cfg).eval()
    nets = net.members if isinstance(net, MPRTMEnsemble) else [net]
    g = torch.Generator().manual_seed(6)
    texts = torch.randn(3, cfg.text_max_segments, cfg.text_dim, generator=g)
    texts[1, 3:] = 0.0  # padding segments
    for m in nets:
        assert m.note_concepts is not None
        m.note_concepts.fit(torch.randn(40, cfg.text_max_segments, cfg.text_dim, generator=g))
        _randomize_linear_path(m)
    rows = torch.tensor([0, 2, 2, 1, 0])
    numeric = torch.randn(5, 8, generator=g)
    image = torch.randn(5, net.image.embed_dim + 1, generator=g)
    present = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1], [1, 0, 1]]).bool()
    feats = net.text_features(texts)
    assert all(len(v) == 3 for v in feats.values())
    assert any(k.endswith("notes") for k in feats)
    direct = net(numeric, texts[rows], image, present)
    pooled = net(numeric, texts[rows], image, present, {k: v[rows] for k, v in feats.items()})
    for key in ("logits", "weights", "cause_logits", "text_attention"):
        assert torch.allclose(direct[key], pooled[key], atol=1e-5), key
    assert torch.count_nonzero(feats[next(k for k in feats if k.endswith("notes"))]) > 0
