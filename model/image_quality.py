"""Can the image network's reading of a series be trusted?  Signals without ground truth.

Every encoded series gets a ``quality`` in [0, 1] and a ``usable`` flag with a reason
(:class:`ImageQuality`).  The signals, each turned into a score in [0, 1] where 1 is good:

* **confidence**: 1 minus the mean normalised entropy of the class probabilities over
  the pixels near the predicted myocardium (a network that hesitates everywhere has
  not recognised the anatomy);
* **flip agreement**: Dice of the myocardium (enhancement included) between the series
  and its left-right mirror image, mapped back (test-time augmentation: a reading that
  changes when the image is mirrored is not anatomy);
* **ring**: the share of slices showing exactly one closed left-ventricular myocardial
  ring (a myocardium component that encloses a blood pool) with little myocardium
  elsewhere, and, when the pixel spacing is known, wall thickness and cavity diameter
  within physiological ranges (median wall thickness and widest cavity over the ring
  slices).  Ring-shaped slices are expected in a short-axis stack; the apex (a disc) and
  the outflow tract (an open ring) are tolerated by the share;
* **enhancement inside**: the share of enhanced pixels that lie in the ring's
  component (enhancement belongs to the myocardium);
* **familiarity**: how far the series' embedding lies from the training series
  (Mahalanobis distance with a shrunk covariance, divided by the 99.5th percentile of
  the held-out validation series' distances; :class:`ImageReference`, stored in the
  checkpoint).  1 inside the training range, falling as the distance grows.

``quality`` is the weakest score.  ``usable`` is False when any rule of
:class:`QualityRules` fails; the reason names the first failing rule in the order:
no myocardium, ring, size, enhancement outside, unfamiliar image, uncertainty,
instability.  A series that is not usable is treated as a missing image by the
predictor (modality weight 0, no fibrosis burden reported).

Physiological ranges (adult LGE, end-diastole): LV myocardial wall thickness 6-12 mm in
health (Kawel-Boehm et al., J Cardiovasc Magn Reson 2020;22:87, normal values), thinner
in chronic transmural infarction and thicker in hypertrophic cardiomyopathy, hence the
wide default 2-30 mm; LV end-diastolic internal diameter about 40-56 mm in health and
up to about 80-90 mm in dilated hearts (same source), hence 20-100 mm for the widest
cavity of the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

#: 8-connectivity for the myocardium, so a thin diagonal ring stays closed; holes are
#: then found with the complementary 4-connectivity of ``binary_fill_holes``.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class QualityRules:
    """When a series counts as readable.  Every threshold is a ``[model]`` setting.

    Args:
        min_quality: the weakest signal score must reach this.
        min_ring_fraction: share of slices with one plausible LV ring (0 switches the
            ring rule off, "no myocardium found" included).
        max_entropy: mean normalised entropy near the myocardium (0 certain, 1 uniform).
        min_flip_agreement: myocardium Dice between the series and its mirror image.
        max_outside_enhancement: share of enhanced pixels outside the LV ring.
        max_ood_ratio: embedding distance over the training range (1 = the 99.5th
            percentile of held-out training-distribution series).
        wall_mm: plausible LV wall thickness (min, max), used when the spacing is known.
        lv_diameter_mm: plausible widest LV cavity diameter of the stack (min, max).
        flip: compute the flip agreement (a second pass of the image network).
    """

    min_quality: float = 0.3
    min_ring_fraction: float = 0.5
    max_entropy: float = 0.45
    min_flip_agreement: float = 0.6
    max_outside_enhancement: float = 0.35
    max_ood_ratio: float = 2.0
    wall_mm: tuple[float, float] = (2.0, 30.0)
    lv_diameter_mm: tuple[float, float] = (20.0, 100.0)
    flip: bool = True

    def __post_init__(self) -> None:
        for name in (
            "min_quality",
            "min_ring_fraction",
            "max_entropy",
            "min_flip_agreement",
            "max_outside_enhancement",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.max_ood_ratio <= 0:
            raise ValueError(f"max_ood_ratio must be positive, got {self.max_ood_ratio}")
        for name in ("wall_mm", "lv_diameter_mm"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min < max")


@dataclass
class ImageQuality:
    """The verdict on one series.

    Args:
        quality: the weakest signal score, 0..1.
        usable: the series may be used as an image input.
        reason: why not (None when usable); free of patient data.
        signals: every measured value (scores and raw measurements), for display.
    """

    quality: float
    usable: bool
    reason: str | None = None
    signals: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "quality": round(float(self.quality), 4),
            "usable": bool(self.usable),
            "reason": self.reason,
            "signals": {k: round(float(v), 4) for k, v in self.signals.items()},
        }


@dataclass(frozen=True)
class ImageReference:
    """The training series' embedding distribution (stored in the checkpoint).

    Args:
        mean: (D,) mean embedding of the training series.
        precision: (D, D) inverse of the shrunk covariance.
        scale: the 99.5th percentile of held-out series' distances (the ratio's unit).
        n: training series the statistics come from.
    """

    mean: torch.Tensor
    precision: torch.Tensor
    scale: float
    n: int

    def distance(self, embedding: np.ndarray) -> float:
        d = torch.as_tensor(np.asarray(embedding, dtype=np.float32)) - self.mean
        return float(torch.sqrt(torch.clamp(d @ self.precision @ d, min=0.0)))

    def ratio(self, embedding: np.ndarray) -> float:
        """Distance in units of the training range (about 1 at its edge)."""
        return self.distance(embedding) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.float().clone(),
            "precision": self.precision.float().clone(),
            "scale": float(self.scale),
            "n": int(self.n),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageReference:
        return cls(
            mean=torch.as_tensor(d["mean"]).float(),
            precision=torch.as_tensor(d["precision"]).float(),
            scale=float(d["scale"]),
            n=int(d["n"]),
        )

    @classmethod
    def fit(cls, train: np.ndarray, held_out: np.ndarray) -> ImageReference | None:
        """Fit on training embeddings (N, D); scale by held-out ones (M, D).

        Returns None with fewer than 8 training series.  The covariance is shrunk
        towards a scaled identity (Ledoit-Wolf), so it is invertible with N < D.
        """
        from sklearn.covariance import LedoitWolf

        train = np.asarray(train, dtype=np.float64)
        if train.ndim != 2 or len(train) < 8:
            return None
        lw = LedoitWolf().fit(train)
        mean = torch.from_numpy(lw.location_).float()
        precision = torch.from_numpy(np.linalg.pinv(lw.covariance_, hermitian=True)).float()
        probe = held_out if len(held_out) >= 8 else train
        ref = cls(mean=mean, precision=precision, scale=1.0, n=len(train))
        dists = np.array([ref.distance(e) for e in np.asarray(probe, dtype=np.float32)])
        scale = float(np.quantile(dists, 0.995)) if len(dists) else 1.0
        return cls(mean=mean, precision=precision, scale=max(scale, 1e-6), n=len(train))


@dataclass
class _SliceRing:
    ring: bool
    n_rings: int
    stray: float
    wall_mm: float | None
    diameter_mm: float | None


def _slice_ring(myo: np.ndarray, spacing_mm: float | None, min_cavity_px: int) -> _SliceRing:
    """Topology and size of one slice's myocardium mask (H, W) bool."""
    lab, n = ndimage.label(myo, structure=_EIGHT)
    total = int(myo.sum())
    sizes = np.bincount(lab.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    rings = 0
    main_cavity = 0
    for k in range(1, n + 1):
        if sizes[k - 1] < max(4, 0.1 * total):
            continue
        comp = lab == k
        cavity = int((ndimage.binary_fill_holes(comp) & ~comp).sum())
        if cavity >= min_cavity_px:
            rings += 1
            if k == main:
                main_cavity = cavity
    stray = 1.0 - sizes[main - 1] / total
    wall = diameter = None
    if main_cavity and spacing_mm:
        area_px = spacing_mm**2
        r_in = np.sqrt(main_cavity * area_px / np.pi)
        r_out = np.sqrt((main_cavity + sizes[main - 1]) * area_px / np.pi)
        wall, diameter = float(r_out - r_in), float(2 * r_in)
    return _SliceRing(rings == 1 and main_cavity > 0, rings, float(stray), wall, diameter)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 0.0


def assess(
    logits: torch.Tensor,
    *,
    spacing_mm: float | None,
    rules: QualityRules,
    flipped_logits: torch.Tensor | None = None,
    ood_ratio: float | None = None,
) -> ImageQuality:
    """The quality verdict of one segmented series.

    Args:
        logits: (S, K, H, W) segmentation logits (class 0 background, 1 myocardium,
            2 enhancement) on the grid the network saw.
        spacing_mm: pixel spacing of that grid in mm, or None (size rules skipped).
        rules: the thresholds.
        flipped_logits: logits of the mirrored series, already mirrored back, or None.
        ood_ratio: :meth:`ImageReference.ratio` of the embedding, or None.
    """
    probs = logits.float().softmax(1)  # (S, K, H, W)
    labels = probs.argmax(1).cpu().numpy()  # (S, H, W)
    n_classes = probs.shape[1]
    myo = labels >= 1
    enh = labels == 2
    s_count = labels.shape[0]
    signals: dict[str, float] = {}

    near = ndimage.binary_dilation(myo, structure=np.ones((1, 5, 5), dtype=bool))
    entropy = -(probs * probs.clamp(min=1e-8).log()).sum(1).cpu().numpy() / np.log(n_classes)
    mean_entropy = float(entropy[near].mean()) if near.any() else 1.0
    signals["entropy"] = mean_entropy
    scores = {"confidence": 1.0 - mean_entropy}

    if flipped_logits is not None:
        other = flipped_logits.float().argmax(1).cpu().numpy() >= 1
        scores["flip_agreement"] = _dice(myo, other)

    min_cavity_px = 3
    per_slice = [
        _slice_ring(myo[k], spacing_mm, min_cavity_px) for k in range(s_count) if myo[k].any()
    ]
    plausible = [r for r in per_slice if r.ring and r.stray <= 0.25]
    scores["ring"] = len(plausible) / s_count if s_count else 0.0
    signals["slices"] = float(s_count)
    signals["slices_with_myocardium"] = float(len(per_slice))
    signals["slices_with_ring"] = float(len(plausible))
    signals["slices_with_two_rings"] = float(sum(r.n_rings >= 2 for r in per_slice))
    walls = [r.wall_mm for r in plausible if r.wall_mm is not None]
    diameters = [r.diameter_mm for r in plausible if r.diameter_mm is not None]
    if walls:
        signals["wall_mm_median"] = float(np.median(walls))
    if diameters:
        signals["lv_diameter_mm_max"] = float(max(diameters))

    n_enh = int(enh.sum())
    outside = 0.0
    if n_enh >= 5:
        inside = 0
        for k in range(s_count):
            if not enh[k].any():
                continue
            lab, n = ndimage.label(myo[k], structure=_EIGHT)
            sizes = np.bincount(lab.ravel())[1:]
            inside += int((enh[k] & (lab == int(np.argmax(sizes)) + 1)).sum())
        outside = 1.0 - inside / n_enh
    signals["enhancement_outside"] = outside
    scores["enhancement_inside"] = 1.0 - outside

    if ood_ratio is not None:
        signals["ood_ratio"] = float(ood_ratio)
        scores["familiarity"] = float(min(1.0, 1.0 / max(ood_ratio, 1e-6)))

    quality = float(min(max(0.0, min(v, 1.0)) for v in scores.values()))
    signals.update(scores)
    reason = _first_failure(rules, scores, signals, per_slice, s_count, diameters, quality)
    return ImageQuality(quality=quality, usable=reason is None, reason=reason, signals=signals)


def _mm(value: float) -> str:
    return f"{value:.0f} mm" if value >= 10 else f"{value:.1f} mm"


def _first_failure(
    rules: QualityRules,
    scores: dict[str, float],
    signals: dict[str, float],
    per_slice: list[_SliceRing],
    s_count: int,
    diameters: list[float],
    quality: float,
) -> str | None:
    if scores["ring"] < rules.min_ring_fraction:
        if not per_slice:
            return "no left-ventricular myocardium found"
        n_ring = int(signals["slices_with_ring"])
        two = int(signals["slices_with_two_rings"])
        what = f"{two} with two rings" if two else "open, broken, misshapen or implausibly sized"
        return (
            f"no plausible left-ventricular ring on {s_count - n_ring} of {s_count} slices ({what})"
        )
    wall = signals.get("wall_mm_median")
    lo_w, hi_w = rules.wall_mm
    if wall is not None and not lo_w <= wall <= hi_w:
        return f"LV wall thickness {_mm(wall)} is outside {lo_w:g}-{hi_w:g} mm"
    lo_d, hi_d = rules.lv_diameter_mm
    if diameters and not lo_d <= max(diameters) <= hi_d:
        return f"LV cavity diameter {_mm(max(diameters))} is outside {lo_d:g}-{hi_d:g} mm"
    if signals["enhancement_outside"] > rules.max_outside_enhancement:
        return (
            f"enhancement outside the myocardium ({signals['enhancement_outside']:.0%} of "
            "enhanced pixels)"
        )
    ratio = signals.get("ood_ratio")
    if ratio is not None and ratio > rules.max_ood_ratio:
        return f"image unlike the training images (distance {ratio:.1f} x the training range)"
    if signals["entropy"] > rules.max_entropy:
        return f"segmentation uncertain (entropy {signals['entropy']:.2f})"
    flip = scores.get("flip_agreement")
    if flip is not None and flip < rules.min_flip_agreement:
        return f"segmentation unstable when the image is mirrored (Dice {flip:.2f})"
    if quality < rules.min_quality:
        return f"image quality {quality:.2f} below {rules.min_quality:g}"
    return None
