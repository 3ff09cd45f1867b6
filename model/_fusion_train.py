"""Stage 2: train the numeric/text projections, fusion and heads on cached embeddings."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.config import ModelConfig
from model.mprtm import MPRTM, Network, SharedRiskLinear

if TYPE_CHECKING:
    from model._live import LiveEncoders

Tensors = dict[str, torch.Tensor]


def _drop_modalities(present: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Randomly hide present modalities, never all of a patient's."""
    drop = (torch.rand(present.shape, generator=gen) < p).to(present.device)  # CPU generator
    kept = present & ~drop
    empty = ~kept.any(dim=1, keepdim=True)
    return torch.where(empty, present, kept)


def fusion_loss(
    out: Tensors,
    batch: Tensors,
    present: torch.Tensor | None = None,
    aux_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, outcome BCE) with unknown labels masked out.

    With ``aux_weight`` > 0 the per-modality heads' BCE (present modalities only) is added.
    """
    y = batch["y"]  # (B, O), NaN unknown
    known = ~torch.isnan(y)
    target = torch.nan_to_num(y)
    bce = F.binary_cross_entropy_with_logits(out["logits"], target, reduction="none")
    bce = (bce * known).sum() / known.sum().clamp(min=1)
    total = bce
    if aux_weight > 0 and present is not None and "aux_logits" in out:
        aux = F.binary_cross_entropy_with_logits(
            out["aux_logits"], target[:, None].expand_as(out["aux_logits"]), reduction="none"
        )  # (B, M, O)
        w = known[:, None, :] & present[..., None]
        total = total + aux_weight * (aux * w).sum() / w.sum().clamp(min=1)
    cause = batch["cause"]
    if bool((cause >= 0).any()):
        total = total + 0.3 * F.cross_entropy(out["cause_logits"], cause, ignore_index=-1)
    burden = batch["burden"]
    bk = ~torch.isnan(burden)
    if bool(bk.any()):
        total = total + 5.0 * F.mse_loss(out["burden"][bk], burden[bk])
    return total, bce


def _forward(net: Network, b: Tensors, present: torch.Tensor) -> Tensors:
    return net(b["numeric"], b["text"], b["image"], present)


def restrict(present: torch.Tensor, only: int | None) -> torch.Tensor:
    """Keep only modality ``only`` (rows without it keep nothing and must be dropped)."""
    if only is None:
        return present
    keep = torch.zeros_like(present)
    keep[:, only] = present[:, only]
    return keep


def evaluate_loss(net: Network, data: Tensors, only: int | None, batch: int = 512) -> float:
    """Mean outcome BCE of ``data`` (patients lacking the ``only`` modality skipped)."""
    net.eval()
    present = restrict(data["present"], only)
    rows = present.any(dim=1)
    total, n = 0.0, 0
    with torch.inference_mode():
        idx = rows.nonzero()[:, 0]
        for s in range(0, len(idx), batch):
            sel = idx[s : s + batch]
            b = {k: v[sel] for k, v in data.items()}
            _, bce = fusion_loss(_forward(net, b, present[sel]), b)
            total += float(bce) * len(sel)
            n += len(sel)
    return total / max(n, 1)


def wide_parameters(net: MPRTM) -> list[torch.nn.Parameter]:
    """The linear path's parameters: the shortcut and the text's sentence detectors."""
    if net.shortcut is None:
        return []
    return [*net.shortcut.parameters(), *net.text_pool.detect.parameters()]


def sparsity_penalty(net: MPRTM) -> torch.Tensor:
    """L1 norm of the linear path's numeric weights; with a reduced-rank path, the group
    lasso of each numeric input's loadings on the shared scores (Yuan & Lin 2006), so an
    input is dropped from all outcomes at once.  The outcome mixing weights get a ridge
    term so that the penalty cannot be dodged by shrinking the loadings and growing the
    mix."""
    nw = net.numeric_width
    if isinstance(net.shortcut, SharedRiskLinear):
        w = net.shortcut.down.weight[:, :nw]  # (rank, numeric inputs)
        return torch.sqrt((w * w).sum(0) + 1e-12).sum() + (net.shortcut.up.weight**2).sum()
    assert net.shortcut is not None
    return net.shortcut.weight[:, :nw].abs().sum()


def train_fusion(
    net: MPRTM,
    train: Tensors,
    val: Tensors,
    cfg: ModelConfig,
    seed: int,
    epochs: int,
    only: int | None = None,
    progress: bool = True,
    desc: str = "stage 2: fusion",
    live: LiveEncoders | None = None,
) -> dict[str, list[float]]:
    """Train everything but the image branch; early-stop on validation BCE.

    With the linear path (``cfg.linear_shortcut``) training has two phases.  Phase A fits
    the linear path alone (sparse numeric weights, LGE burden, sentence detectors) to
    its best validation loss; the deep branches are not run in it (``net.use_deep`` is
    False), so the detectors learn from the outcomes only, not through the untrained
    fusion's auxiliary and cause losses.  Phase B freezes it and trains the attention fusion, the
    branches and the heads as a residual on top, starting from a zero outcome head, so
    phase B begins exactly at phase A's model; its best epoch by validation loss is kept,
    even when phase A alone was a little better, so that the fusion and the modality
    weights it reports are always trained.  With ``cfg.backfit`` a phase C then re-fits
    the linear path with the deep residual frozen (the phase-B state is kept unless
    re-fitting lowers the validation loss).  Modalities are dropped at random
    (``cfg.modality_dropout``) in phase B only: the fusion must learn to do without a
    modality, while the linear path treats a missing modality as average anyway, and
    dropping in phases A and C only blurred its fit (validation loss 0.4447-0.4465
    against 0.4486-0.4505, ``docs/model-performance.md``).  Without the
    phases the dense numeric MLP over-fits within two epochs, before the weaker text and
    image signals are learned (measured in ``docs/model-performance.md``).

    Args:
        net: the network (its image branch stays frozen).
        train, val: tensors ``numeric``, ``text``, ``image``, ``present``, ``y``,
            ``cause``, ``burden``.
        cfg: config (learning rate, batch, patience, modality dropout).
        seed: seeds shuffling and modality dropout.
        epochs: maximum epochs of each phase.
        only: train a single-modality model on this modality index.
        progress: show a progress bar.
        desc: progress-bar label.
        live: encoders trained along in phase B (fine-tuned text, joint image), else None.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in net.image.parameters():
        p.requires_grad = False
    hist: dict[str, list[float]] = {}
    wide = wide_parameters(net)

    def fit_linear(label: str, lr: float, prefix: str) -> None:
        """Fit the linear path alone (phases A and C), keeping its start if not beaten."""
        h = _fit(
            net, train, val, cfg, gen, epochs, only, progress, label, None, wide, lr,
            keep_start=True, modality_dropout=0.0,
        )  # fmt: skip
        hist.update({f"{prefix}_{k}": v for k, v in h.items()})

    if wide:
        net.use_deep = False
        fit_linear(f"{desc} (linear)", cfg.linear_lr, "wide")
        net.use_deep = True
        for p in wide:
            p.requires_grad = False
        torch.nn.init.zeros_(net.heads.outcomes.weight)
        torch.nn.init.zeros_(net.heads.outcomes.bias)
    ids = {id(p) for p in wide}
    deep = [p for n, p in net.named_parameters() if not n.startswith("image.") and id(p) not in ids]
    if live is not None:
        deep += live.parameters()
        live.refresh("val", val)
    hist.update(
        _fit(
            net,
            train,
            val,
            cfg,
            gen,
            epochs,
            only,
            progress,
            desc,
            live,
            deep,
            lr=cfg.fusion_lr,
            keep_start=not wide,
            modality_dropout=cfg.modality_dropout,
        )
    )
    for p in wide:
        p.requires_grad = True
    if wide and cfg.backfit:
        for p in deep:
            p.requires_grad = False
        fit_linear(f"{desc} (linear re-fit)", 0.3 * cfg.linear_lr, "backfit")
        for p in deep:
            p.requires_grad = True
    return hist


def _fit(
    net: MPRTM,
    train: Tensors,
    val: Tensors,
    cfg: ModelConfig,
    gen: torch.Generator,
    epochs: int,
    only: int | None,
    progress: bool,
    desc: str,
    live: LiveEncoders | None,
    params: list[torch.nn.Parameter],
    lr: float,
    keep_start: bool,
    modality_dropout: float,
) -> dict[str, list[float]]:
    """Train ``params`` with early stopping on the validation BCE.

    With ``keep_start`` the untrained state is a candidate too; phase B does not keep it,
    so the fusion (and the modality weights it reports) is always trained.
    ``modality_dropout`` is the chance of hiding each present modality of a training
    patient (single-modality baselines never drop).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    present_all = restrict(train["present"], only)
    rows = present_all.any(dim=1).nonzero()[:, 0]
    hist: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best = evaluate_loss(net, val, only) if keep_start else float("inf")
    best_state, stale = copy.deepcopy(net.state_dict()), 0
    best_live = live.state() if live is not None else {}
    trainable = net.shortcut is not None and all(p.requires_grad for p in net.shortcut.parameters())
    l1 = cfg.shortcut_l1 if trainable else 0.0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for _ in bar:
        net.train()
        net.image.train(live is not None and live.image is not None)
        if live is not None:
            live.train(True)
        perm = rows[torch.randperm(len(rows), generator=gen)]
        total, count = 0.0, 0
        for s in range(0, len(perm), cfg.fusion_batch):
            sel = perm[s : s + cfg.fusion_batch]
            b = {k: v[sel] for k, v in train.items()}
            present = present_all[sel]
            if only is None and modality_dropout > 0:
                present = _drop_modalities(present, modality_dropout, gen)
            extra = None
            if live is not None:
                b, extra = live.batch("train", sel, b)
            loss, bce = fusion_loss(_forward(net, b, present), b, present, cfg.aux_weight)
            if extra is not None:
                loss = loss + extra
            if l1 > 0 and net.shortcut is not None:
                loss = loss + l1 * sparsity_penalty(net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            total += float(bce.detach()) * len(sel)
            count += len(sel)
        hist["train_loss"].append(total / max(count, 1))
        if live is not None:
            live.refresh("val", val)
        v = evaluate_loss(net, val, only)
        hist["val_loss"].append(v)
        bar.set_postfix(train=f"{hist['train_loss'][-1]:.4f}", val=f"{v:.4f}")
        if v < best - 1e-4:
            best, best_state, stale = v, copy.deepcopy(net.state_dict()), 0
            best_live = live.state() if live is not None else {}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    if live is not None:
        live.load_state(best_live)
        live.refresh("val", val)
        live.refresh("train", train)
    return hist


def predict_logits(
    net: Network, data: Tensors, only: int | None = None, batch: int = 512
) -> Tensors:
    """Raw outputs (logits, cause_logits, burden, weights) for all rows of ``data``.

    Rows without the ``only`` modality get NaN logits.
    """
    net.eval()
    present = restrict(data["present"], only)
    n = len(present)
    outs: dict[str, list[torch.Tensor]] = {}
    ok = present.any(dim=1)
    safe = torch.where(ok[:, None], present, data["present"])
    with torch.inference_mode():
        for s in range(0, n, batch):
            b = {k: v[s : s + batch] for k, v in data.items()}
            o = _forward(net, b, safe[s : s + batch])
            for k in ("logits", "cause_logits", "burden", "weights"):
                outs.setdefault(k, []).append(o[k])
    res = {k: torch.cat(v) for k, v in outs.items()}
    res["logits"] = torch.where(
        ok[:, None], res["logits"], torch.full_like(res["logits"], float("nan"))
    )
    return res
