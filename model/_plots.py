"""PNG plots (matplotlib, Agg backend): training curves, ROC, calibration, Dice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def plot_training_curves(hist: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Stage-1 loss and Dice, stage-2 train/validation losses."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if hist.get("seg_loss"):
        axes[0].plot(hist["seg_loss"], label="train loss")
        axes[0].set_title("stage 1: segmentation loss")
        axes[1].plot(hist["seg_val_dice_myocardium"], label="myocardium")
        axes[1].plot(hist["seg_val_dice_enhancement"], label="enhancement")
        axes[1].set_title("stage 1: validation Dice")
        axes[1].legend()
    n_wide = len(hist.get("wide_val_loss", []))
    for k in ("wide_train_loss", "wide_val_loss"):
        if hist.get(k):
            axes[2].plot(hist[k], label=f"phase A (linear) {k[5:]}", linestyle="--")
    for k, v in hist.items():
        if k in ("train_loss", "val_loss"):  # phase B continues after phase A
            axes[2].plot(range(n_wide, n_wide + len(v)), v, label=f"phase B (fusion) {k}")
        elif k.endswith("_only_val_loss"):
            axes[2].plot(v, label=k, alpha=0.5)
        elif k.startswith("member") and k.endswith("_val_loss"):  # other ensemble members
            axes[2].plot(v, label=f"{k[:-9]} phase B val_loss", alpha=0.5, linestyle=":")
    n_deep = n_wide + len(hist.get("val_loss", []))
    for k in ("backfit_train_loss", "backfit_val_loss"):
        if hist.get(k):  # phase C re-fits the linear path after phase B
            v = hist[k]
            axes[2].plot(range(n_deep, n_deep + len(v)), v, label=f"phase C (re-fit) {k[8:]}")
    for x in (n_wide, n_deep if hist.get("backfit_val_loss") else 0):
        if x:
            axes[2].axvline(x, color="grey", linewidth=0.8)
    axes[2].set_title("stage 2: outcome BCE")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(y: np.ndarray, curves: Mapping[str, np.ndarray], title: str, path: Path) -> Path:
    """ROC curves of several models for one outcome."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in curves.items():
        ok = ~np.isnan(p)
        fpr, tpr, _ = roc_curve(y[ok], p[ok])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_calibration(
    y: np.ndarray, curves: Mapping[str, np.ndarray], title: str, path: Path
) -> Path:
    """Reliability diagram (10 equal-width bins)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, 11)
    for name, p in curves.items():
        ok = ~np.isnan(p)
        which = np.clip(np.digitize(p[ok], edges[1:-1]), 0, 9)
        xs, ys = [], []
        for b in range(10):
            m = which == b
            if m.sum() >= 5:
                xs.append(p[ok][m].mean())
                ys.append(y[ok][m].mean())
        ax.plot(xs, ys, "o-", label=name, ms=3)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_dice(dice: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Per-patient Dice distributions."""
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(dice)
    ax.boxplot([list(dice[n]) for n in names], tick_labels=names)
    ax.set_ylabel("Dice per patient")
    ax.set_ylim(0, 1)
    ax.set_title("segmentation (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
