"""Stage 1: train DAE-Former on LGE slices with masks."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model._augment import augment
from model.config import ModelConfig
from model.image_branch import ENHANCEMENT, MYOCARDIUM, ImageBranch, prepare_mask, prepare_volume
from model.localise import Box, box_from_mask, jitter_box, train_localiser
from model.types import LabelledExample

log = logging.getLogger("mprtm.train")


def collect_slices(
    examples: Sequence[LabelledExample],
    cfg: ModelConfig,
    per_patient: int,
    rng: np.random.Generator,
    boxes: Sequence[Box | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resized slices (N, 1, s, s) and masks (N, s, s) from examples that have both.

    Args:
        examples: patients.
        cfg: config (image size).
        per_patient: slices drawn per patient at most (0 = all).
        rng: draws the slices.
        boxes: each patient's crop (None: the centred crop of ``cfg.crop``).
    """
    xs, ys = [], []
    for k, ex in enumerate(examples):
        img, m = ex.input.image, ex.masks
        if img is None or m is None:
            continue
        if m.shape != img.shape:
            log.warning("patient %s: mask shape differs from image; skipped", ex.input.patient_id)
            continue
        n = img.shape[0]
        idx = np.arange(n)
        if per_patient and n > per_patient:
            idx = np.sort(rng.choice(n, per_patient, replace=False))
        box = boxes[k] if boxes is not None else None
        xs.append(prepare_volume(img[idx], cfg.image_size, len(idx), cfg.crop, box))
        ys.append(prepare_mask(m[idx], cfg.image_size, cfg.crop, box))
    if not xs:
        return torch.zeros(0, 1, cfg.image_size, cfg.image_size), torch.zeros(
            0, cfg.image_size, cfg.image_size, dtype=torch.long
        )
    return torch.cat(xs), torch.cat(ys)


def _training_box(ex: LabelledExample, cfg: ModelConfig, rng: np.random.Generator) -> Box | None:
    """A box around the true myocardium with a random margin and shift (None: no heart)."""
    if ex.masks is None:
        return None
    h, w = ex.masks.shape[-2:]
    box = box_from_mask(ex.masks, cfg.localiser_margin, 0.15 * min(h, w))
    return None if box is None else jitter_box(box, rng)


def limit_patients(
    examples: Sequence[LabelledExample], cap: int, rng: np.random.Generator
) -> list[LabelledExample]:
    """The patients with an image and masks; at most ``cap`` of them (drawn, order kept).

    ``cap`` 0 keeps all.  Nothing is drawn from ``rng`` when the cap is not reached.
    """
    usable = [e for e in examples if e.input.image is not None and e.masks is not None]
    if not cap or len(usable) <= cap:
        return usable
    keep = np.sort(rng.choice(len(usable), cap, replace=False))
    return [usable[int(i)] for i in keep]


def dice_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Dice of the whole myocardium (labels 1 and 2) and of enhancement (label 2)."""
    out = {}
    for name, fn in (
        ("dice_myocardium", lambda t: t >= MYOCARDIUM),
        ("dice_enhancement", lambda t: t == ENHANCEMENT),
    ):
        p, t = fn(pred), fn(target)
        inter = (p & t).sum().item()
        total = p.sum().item() + t.sum().item()
        out[name] = 1.0 if total == 0 else 2.0 * inter / total
    return out


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the foreground classes; logits (B, K, H, W)."""
    ce = F.cross_entropy(logits, target, weight=class_weight)
    prob = logits.softmax(1)  # (B, K, H, W)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)  # (K,)
    return ce + dice[1:].mean()


def predict_labels(branch: ImageBranch, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Argmax labels (N, s, s) of prepared slices."""
    branch.eval()
    outs = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            outs.append(branch.segmenter(x[s : s + batch]).argmax(1))
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.long)


def train_segmentation(
    branch: ImageBranch,
    train: Sequence[LabelledExample],
    val: Sequence[LabelledExample],
    cfg: ModelConfig,
    rng: np.random.Generator,
    device: torch.device,
    epochs: int,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train the segmenter in place; keep the weights of the best validation epoch.

    With a localiser it is trained first (:func:`model.localise.train_localiser`); the
    segmenter then learns on boxes around the true myocardium with random margins and
    shifts, and is validated on the localiser's boxes, as it is used.

    Returns:
        history: ``localiser_loss``, ``seg_loss``, ``seg_val_dice_myocardium``,
        ``seg_val_dice_enhancement``.
    """
    cap = cfg.seg_max_patients
    train = limit_patients(train, cap, rng)
    val = limit_patients(val, max(1, cap // 4) if cap else 0, rng)
    hist: dict[str, list[float]] = {"localiser_loss": []}
    tr_boxes: list[Box | None] | None = None
    va_boxes: list[Box | None] | None = None
    if branch.localiser is not None:
        hist["localiser_loss"] = train_localiser(
            branch.localiser, train, rng, device, cfg.localiser_epochs, progress=progress
        )
        tr_boxes = [_training_box(ex, cfg, rng) for ex in train]
        va_boxes = [branch.crop_box(ex.input.image) for ex in val]  # type: ignore[arg-type]
    x_tr, y_tr = collect_slices(train, cfg, cfg.seg_max_slices_train, rng, tr_boxes)
    x_va, y_va = collect_slices(val, cfg, cfg.seg_max_slices_train, rng, va_boxes)
    hist.update(
        {
            "seg_loss": [],
            "seg_val_dice_myocardium": [],
            "seg_val_dice_enhancement": [],
        }
    )
    if len(x_tr) == 0:
        log.warning("no training slices with masks: stage 1 skipped")
        return hist
    freq = torch.bincount(y_tr.flatten(), minlength=cfg.num_classes).float()
    class_weight = (
        (freq.sum() / (freq.clamp(min=1) * cfg.num_classes)).clamp(max=20.0).sqrt().to(device)
    )
    seg = branch.segmenter.to(device)
    opt = torch.optim.AdamW(seg.parameters(), lr=cfg.seg_lr, weight_decay=cfg.weight_decay)
    steps = max(1, epochs * ((len(x_tr) + cfg.seg_batch - 1) // cfg.seg_batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.seg_lr, total_steps=steps, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    best, best_state = -1.0, copy.deepcopy(seg.state_dict())
    bar = tqdm(range(epochs), desc="stage 1: segmentation", unit="epoch", disable=not progress)
    for _ in bar:
        seg.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total, count = 0.0, 0
        for s in range(0, len(perm), cfg.seg_batch):
            idx = perm[s : s + cfg.seg_batch]
            xb, yb = x_tr[idx], y_tr[idx]
            if cfg.seg_augment:
                xb, yb = augment(xb, yb, gen)
            elif torch.rand((), generator=gen) < 0.5:  # flip augmentation
                xb, yb = xb.flip(-1), yb.flip(-1)
            xb, yb = xb.to(device), yb.to(device)
            loss = segmentation_loss(seg(xb), yb, class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        hist["seg_loss"].append(total / max(count, 1))
        if len(x_va):
            d = dice_scores(predict_labels(branch, x_va.to(device)).cpu(), y_va)
        else:
            d = {"dice_myocardium": float("nan"), "dice_enhancement": float("nan")}
        hist["seg_val_dice_myocardium"].append(d["dice_myocardium"])
        hist["seg_val_dice_enhancement"].append(d["dice_enhancement"])
        score = d["dice_myocardium"] + d["dice_enhancement"] if len(x_va) else -hist["seg_loss"][-1]
        if score > best:
            best, best_state = score, copy.deepcopy(seg.state_dict())
        bar.set_postfix(loss=f"{hist['seg_loss'][-1]:.3f}", dice_enh=f"{d['dice_enhancement']:.3f}")
    seg.load_state_dict(best_state)
    seg.eval()
    return hist


def embed_images(
    branch: ImageBranch,
    examples: Sequence[LabelledExample],
    cfg: ModelConfig,
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings with burden last (N, 2*C_3 + 1) and presence (N,)."""
    out = np.zeros((len(examples), branch.embed_dim + 1), dtype=np.float32)
    present = np.zeros(len(examples), dtype=bool)
    branch.eval()
    it = tqdm(examples, desc="image embeddings", unit="patient", disable=not progress)
    with torch.inference_mode():
        for r, ex in enumerate(it):
            if ex.input.image is None:
                continue
            img = ex.input.image
            box = branch.crop_box(img)
            x = prepare_volume(img, cfg.image_size, cfg.max_slices, cfg.crop, box).to(device)
            f = branch.forward_features(x)
            out[r, :-1] = f["embedding"].cpu().numpy()
            out[r, -1] = float(f["burden"])
            present[r] = True
    return out, present
