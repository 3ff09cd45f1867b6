"""Heart localisation: a coarse detector that gives each series the crop the segmenter sees.

The segmenter works on a square crop around the heart, resized to ``image_size``.  The
crop box of a series comes from :class:`HeartLocaliser`, a small fully convolutional
network that maps each slice, downsampled to ``size`` pixels over the whole field of
view, to a coarse map of the probability that a pixel is LV myocardium.  The map's
maximum over the slices is thresholded; the bounding box of its largest connected part,
enlarged by ``margin`` and made square, is the series' crop box in pixels of the input
volume.  The box is kept with the series, so the segmentation is pasted back exactly
where the crop came from (:func:`paste_labels`).  Where no heart is found the box falls
back to the centred crop of the config.

Training uses the truth masks: the localiser learns the myocardium map, the segmenter
learns on boxes drawn around the true myocardium with a random margin and shift (the
localiser's errors), and validation, embeddings and inference use the localiser's boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from model._augment import augment
from model.types import LabelledExample

log = logging.getLogger("mprtm.train")

#: (top, left, height, width) in pixels of the input volume; may reach outside it.
Box = tuple[int, int, int, int]


class HeartLocaliser(nn.Module):
    """Coarse myocardium detector over the whole field of view.

    Args:
        size: side of the downsampled slice it looks at (a multiple of 8).
        width: channels of its first stage (doubled in the second and third).
    """

    def __init__(self, size: int = 64, width: int = 12) -> None:
        super().__init__()
        if size < 32 or size % 8:
            raise ValueError(f"localiser size must be a multiple of 8 >= 32, got {size}")
        if width <= 0:
            raise ValueError(f"localiser width must be positive, got {width}")
        self.size = size

        def block(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                nn.GroupNorm(4, cout),
                nn.GELU(),
            )

        w = width
        self.net = nn.Sequential(
            block(1, w, 2),
            block(w, 2 * w, 2),
            block(2 * w, 2 * w, 1, 2),
            block(2 * w, 4 * w, 1, 4),
            block(4 * w, 4 * w, 1, 8),
            nn.Conv2d(4 * w, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, size/4, size/4) of slices (N, 1, size, size)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, H, W) slices, got {tuple(x.shape)}")
        return self.net(x)

    def coarse(self, volume: np.ndarray) -> torch.Tensor:
        """The slices of ``volume`` (S, H, W) resized to (S, 1, size, size)."""
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[:, None]
        dev = next(self.parameters()).device
        return F.interpolate(
            x.to(dev), size=(self.size, self.size), mode="bilinear", antialias=True
        )

    @torch.no_grad()
    def probability(self, volume: np.ndarray) -> np.ndarray:
        """Max over slices of the myocardium probability, (size/4, size/4)."""
        was = self.training
        self.eval()
        p = torch.sigmoid(self(self.coarse(volume))).amax(dim=(0, 1))
        self.train(was)
        return p.float().cpu().numpy()


def coarse_target(mask: np.ndarray, size: int) -> torch.Tensor:
    """Training target of the localiser: myocardium of masks (S, H, W) at (S, 1, size/4, size/4)."""
    m = torch.from_numpy(np.ascontiguousarray(mask >= 1, dtype=np.float32))[:, None]
    m = F.interpolate(m, size=(size, size), mode="area")
    return F.adaptive_max_pool2d(m, size // 4).gt(0.25).float()


def square_box(
    rows: tuple[float, float], cols: tuple[float, float], margin: float, min_side: float
) -> Box:
    """Square box (top, left, side, side) around the extent ``rows``/``cols`` (pixels,
    [start, stop)), its side ``margin`` times the larger extent and at least ``min_side``."""
    cy, cx = (rows[0] + rows[1]) / 2, (cols[0] + cols[1]) / 2
    side = max(rows[1] - rows[0], cols[1] - cols[0]) * margin
    side = int(round(max(side, min_side, 8.0)))
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side, side


def box_from_mask(mask: np.ndarray, margin: float, min_side: float) -> Box | None:
    """The box around all myocardium of masks (S, H, W), or None without myocardium."""
    any_myo = np.asarray(np.any(np.asarray(mask) >= 1, axis=0))
    rows, cols = np.nonzero(any_myo.any(1))[0], np.nonzero(any_myo.any(0))[0]
    if rows.size == 0:
        return None
    return square_box(
        (float(rows[0]), float(rows[-1] + 1)),
        (float(cols[0]), float(cols[-1] + 1)),
        margin,
        min_side,
    )


def box_from_probability(
    prob: np.ndarray, shape: tuple[int, int], margin: float, min_side: float, threshold: float = 0.5
) -> Box | None:
    """The box of the largest connected part of ``prob > threshold`` in an image of
    ``shape`` (H, W); None when nothing passes the threshold."""
    on = prob > threshold
    if not on.any():
        return None
    lab, n = ndimage.label(on)
    if n > 1:  # the largest part weighted by probability: the heart, not a stray blob
        mass = ndimage.sum(prob, lab, range(1, n + 1))
        on = lab == int(np.argmax(mass)) + 1
    rows, cols = np.nonzero(on.any(1))[0], np.nonzero(on.any(0))[0]
    sy, sx = shape[0] / prob.shape[0], shape[1] / prob.shape[1]
    return square_box(
        (rows[0] * sy, (rows[-1] + 1) * sy), (cols[0] * sx, (cols[-1] + 1) * sx), margin, min_side
    )


def jitter_box(box: Box, rng: np.random.Generator, scale: float = 0.12) -> Box:
    """``box`` with its side scaled by up to +-``scale`` and its centre moved by up to
    ``scale`` of its side (the localiser's errors, for training the segmenter)."""
    top, left, h, _ = box
    side = max(8, int(round(h * rng.uniform(1 - scale, 1 + scale))))
    cy = top + h / 2 + rng.uniform(-scale, scale) * h
    cx = left + h / 2 + rng.uniform(-scale, scale) * h
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side, side


def crop(volume: torch.Tensor, box: Box) -> torch.Tensor:
    """The ``box`` of (..., H, W), zero-padded where it reaches outside."""
    top, left, h, w = box
    H, W = volume.shape[-2:]
    pad = (max(0, -left), max(0, left + w - W), max(0, -top), max(0, top + h - H))
    if any(pad):
        volume = F.pad(volume, pad)
        top, left = top + pad[2], left + pad[0]
    return volume[..., top : top + h, left : left + w]


def paste_logits(logits: torch.Tensor, box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Labels (S, H, W) uint8 of an image of ``shape`` from the logits (S, K, h, w) of
    its crop at ``box``: resized to the box (bilinear), argmax, pasted back (the parts of
    the box outside the image dropped; background elsewhere)."""
    top, left, bh, bw = box
    if logits.shape[-2:] != (bh, bw):
        logits = F.interpolate(logits, size=(bh, bw), mode="bilinear", align_corners=False)
    lab = logits.argmax(1).to(torch.uint8).cpu().numpy()
    H, W = shape
    out = np.zeros((lab.shape[0], H, W), dtype=np.uint8)
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(H, top + bh), min(W, left + bw)
    if r1 > r0 and c1 > c0:
        out[:, r0:r1, c0:c1] = lab[:, r0 - top : r1 - top, c0 - left : c1 - left]
    return out


def train_localiser(
    loc: HeartLocaliser,
    examples: Sequence[LabelledExample],
    rng: np.random.Generator,
    device: torch.device,
    epochs: int,
    per_patient: int = 6,
    batch: int = 64,
    progress: bool = True,
) -> list[float]:
    """Train ``loc`` in place on the myocardium of examples with masks (augmented).

    Args:
        loc: the localiser.
        examples: patients with an image and masks.
        rng: draws the slices.
        device: where to train.
        epochs: passes over the slices.
        per_patient: slices per patient at most (evenly spaced, the slices beyond the
            apex and above the base included: they teach "no heart here").
        batch: slices per step.

    Returns:
        the mean loss of each epoch.
    """
    xs, ms = [], []
    for ex in examples:
        img, m = ex.input.image, ex.masks
        if img is None or m is None or m.shape != img.shape:
            continue
        n = img.shape[0]
        idx = np.unique(np.round(np.linspace(0, n - 1, min(n, per_patient))).astype(int))
        xs.append(loc.coarse(img[idx]).cpu())
        lab = torch.from_numpy(np.ascontiguousarray(m[idx] >= 1, dtype=np.float32))[:, None]
        ms.append(F.interpolate(lab, size=(loc.size, loc.size), mode="nearest-exact")[:, 0].long())
    losses: list[float] = []
    if not xs or epochs <= 0:
        log.warning("no slices with masks: the localiser is not trained")
        return losses
    x_all, m_all = torch.cat(xs), torch.cat(ms)
    loc.to(device).train()
    opt = torch.optim.AdamW(loc.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x_all) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    pos_weight = torch.tensor(8.0, device=device)
    bar = tqdm(range(epochs), desc="stage 1: heart localiser", unit="epoch", disable=not progress)
    for _ in bar:
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for s in range(0, len(perm), batch):
            sel = perm[s : s + batch]
            xb, mb = augment(x_all[sel], m_all[sel], gen)
            target = F.adaptive_max_pool2d(mb[:, None].float(), loc.size // 4).to(device)
            logits = loc(xb.to(device))
            prob = torch.sigmoid(logits)
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight) + dice
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(sel)
        losses.append(total / len(x_all))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    loc.eval()
    return losses
