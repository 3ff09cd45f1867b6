"""Myocardium Dice of the image network on real slices with expert contours.

The slices (built by ``cds.realdata``; the Sunnybrook cine subset by default) test the
anatomy and localisation the network learned: is the predicted myocardium (labels 1 and
2 together) where the experts drew it?  The enhancement class is never scored here, as
the images are not LGE.  Each slice is segmented as a one-slice series through the
network's ordinary inference path (:meth:`model.predictor.Predictor.encode_images`: the
model's crop and resize, the segmentation mapped back to the slice's grid).

Dice is pooled over the pixels of all slices (2 |P & T| / (|P| + |T|)); its 95% interval
is the percentile bootstrap over patients (slices of a patient stay together), as the
patients, not the slices, are the independent units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from model.image_branch import MYOCARDIUM
from model.types import ImageFeatures


@dataclass(frozen=True)
class LabelledSlices:
    """2-D slices with a myocardium mask, from several patients.

    Args:
        images: (N, H, W) float32, intensities about [0, 1] (each patient normalised as
            one series).
        masks: (N, H, W) uint8; >= 1 is myocardium, 0 background.
        patients: the patient of each slice (the bootstrap unit).
        slice_ids: a name for each slice, used in errors.
        spacing_mm: (N,) in-plane pixel spacing of ``images`` in mm.
        name: the data set, for the report heading.
        description: what the images are and what they may be used for, for the report.
    """

    images: np.ndarray
    masks: np.ndarray
    patients: tuple[str, ...]
    slice_ids: tuple[str, ...]
    spacing_mm: np.ndarray
    name: str
    description: str

    def __post_init__(self) -> None:
        n = len(self.patients)
        if self.images.ndim != 3 or self.images.shape != self.masks.shape:
            raise ValueError(
                f"images {self.images.shape} and masks {self.masks.shape} must be equal (N, H, W)"
            )
        if not (self.images.shape[0] == n == len(self.slice_ids) == len(self.spacing_mm)):
            raise ValueError(
                f"{self.images.shape[0]} images, {n} patients, {len(self.slice_ids)} slice "
                f"ids and {len(self.spacing_mm)} spacings must agree"
            )
        if n == 0:
            raise ValueError("no slices")


class ImageSegmenter(Protocol):
    """What the evaluation needs of a network: :class:`model.predictor.Predictor`'s
    ``encode_images``."""

    def encode_images(
        self, volumes: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[ImageFeatures]: ...


def dice_over_patients(
    pred: np.ndarray,
    true: np.ndarray,
    patients: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pooled myocardium Dice of label arrays, per patient, with a patient bootstrap CI.

    Args:
        pred, true: (N, H, W) integer labels; >= 1 counts as myocardium.
        patients: the patient of each of the N slices.
        n_boot: bootstrap resamples (0: no interval).
        seed: seed of the resampling.

    Returns:
        ``dice`` (pooled over all pixels; 1.0 when both are empty), ``ci`` ([lo, hi] or
        None), ``mean_patient_dice``, ``per_patient`` (patient -> pooled Dice of its
        slices), ``per_slice`` (list), ``n_patients``, ``n_slices``,
        ``predicted_pixels`` and ``true_pixels`` (myocardium pixel counts).
    """
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must be equal (N, H, W)")
    if len(patients) != pred.shape[0]:
        raise ValueError(f"{len(patients)} patient ids for {pred.shape[0]} slices")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    p, t = pred >= MYOCARDIUM, true >= MYOCARDIUM
    inter = (p & t).sum(axis=(1, 2)).astype(np.float64)  # (N,)
    total = (p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))).astype(np.float64)  # (N,)
    names = list(dict.fromkeys(patients))
    index = np.array([names.index(x) for x in patients])
    inter_p = np.bincount(index, weights=inter, minlength=len(names))  # (P,)
    total_p = np.bincount(index, weights=total, minlength=len(names))  # (P,)
    per_patient = {n: _ratio(inter_p[k], total_p[k]) for k, n in enumerate(names)}
    ci = None
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(names), size=(n_boot, len(names)))
        boot = [_ratio(inter_p[d].sum(), total_p[d].sum()) for d in draws]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        ci = [float(lo), float(hi)]
    return {
        "dice": _ratio(inter.sum(), total.sum()),
        "ci": ci,
        "mean_patient_dice": float(np.mean(list(per_patient.values()))),
        "per_patient": per_patient,
        "per_slice": [_ratio(i, s) for i, s in zip(inter, total, strict=True)],
        "n_patients": len(names),
        "n_slices": int(pred.shape[0]),
        "predicted_pixels": int(p.sum()),
        "true_pixels": int(t.sum()),
    }


def _ratio(inter: float, total: float) -> float:
    return 1.0 if total == 0 else float(2.0 * inter / total)


def segment_slices(segmenter: ImageSegmenter, data: LabelledSlices) -> np.ndarray:
    """(N, H, W) uint8 labels of every slice, each segmented as a one-slice series."""
    feats = segmenter.encode_images(
        [img[None] for img in data.images],
        names=[f"{p} {s}" for p, s in zip(data.patients, data.slice_ids, strict=True)],
    )
    pred = np.zeros(data.masks.shape, dtype=np.uint8)
    for k, f in enumerate(feats):
        if f.segmentation is None or f.segmentation.shape != (1, *data.masks.shape[1:]):
            shape = None if f.segmentation is None else f.segmentation.shape
            raise ValueError(f"{data.slice_ids[k]}: segmentation of shape {shape}")
        pred[k] = f.segmentation[0]
    return pred


def evaluate_real_anatomy(
    segmenter: ImageSegmenter,
    data: LabelledSlices,
    n_boot: int = 1000,
    seed: int = 0,
    figure: str | Path | None = None,
) -> dict[str, Any]:
    """Segment every slice of ``data`` and score the myocardium (see the module docstring).

    Args:
        segmenter: a :class:`model.predictor.Predictor` (or anything with its
            ``encode_images``).
        data: the slices and their masks.
        n_boot: bootstrap resamples of the patients for the 95% interval.
        seed: seed of the resampling.
        figure: also write a PNG there (:func:`plot_real_anatomy`).

    Returns:
        :func:`dice_over_patients`' result plus ``name``, ``description`` and
        ``mean_spacing_mm``.
    """
    pred = segment_slices(segmenter, data)
    res = dice_over_patients(pred, data.masks, data.patients, n_boot, seed)
    if figure is not None:
        plot_real_anatomy(data, pred, Path(figure))
    return {
        "name": data.name,
        "description": data.description,
        "mean_spacing_mm": float(np.mean(data.spacing_mm)),
        **res,
    }


def plot_real_anatomy(data: LabelledSlices, pred: np.ndarray, path: Path) -> Path:
    """One slice per patient (the middle one of its slices): the image, the expert
    myocardium outlined in green and the predicted myocardium (labels >= 1) in red."""
    from model._plots import plt

    names = list(dict.fromkeys(data.patients))
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [k for k, p in enumerate(data.patients) if p == name]
        k = rows[len(rows) // 2]
        ax.imshow(data.images[k], cmap="gray", vmin=0.0, vmax=1.0)
        for mask, colour in ((data.masks[k] >= MYOCARDIUM, "lime"), (pred[k] >= MYOCARDIUM, "r")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), [0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"{name} {data.slice_ids[k]}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{data.name}: expert myocardium (green), predicted (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def report_lines(result: dict[str, Any]) -> list[str]:
    """The report.md section of :func:`evaluate_real_anatomy`'s result."""
    ci = result.get("ci")
    ci_text = "" if ci is None else f" (95% CI over patients {ci[0]:.3f} to {ci[1]:.3f})"
    lines = [
        f"## Real anatomy: {result['name']}",
        "",
        result["description"],
        "",
        f"- Dice myocardium (labels 1+2 against the expert ring), pooled over pixels: "
        f"{result['dice']:.3f}{ci_text}",
        f"- Mean of the per-patient Dice: {result['mean_patient_dice']:.3f}; "
        f"{result['n_patients']} patients, {result['n_slices']} slices, mean pixel spacing "
        f"{result['mean_spacing_mm']:.2f} mm",
        f"- Myocardium pixels predicted / expert: {result['predicted_pixels']} / "
        f"{result['true_pixels']}",
        "",
        "| patient | Dice myocardium |",
        "|---|---|",
    ]
    lines += [f"| {p} | {d:.3f} |" for p, d in result["per_patient"].items()]
    return [*lines, ""]
