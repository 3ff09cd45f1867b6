"""Discrimination and calibration metrics with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins (weighted by count)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"y {y.shape} and p {p.shape} must be equal, non-empty")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / y.size)


def _auroc_fast(y: np.ndarray, p: np.ndarray) -> float:
    """AUROC by the rank-sum formula (ties get average ranks)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    # tied scores share the average of their ranks (1-based)
    _, start, counts = np.unique(p[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(start + (counts + 1) / 2.0, counts)
    n1 = y.sum()
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auroc(
    y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0, ref: np.ndarray | None = None
) -> tuple[float, float, float | None, float | None]:
    """95% percentile CI of AUROC; with ``ref``, also the CI of AUROC(p) - AUROC(ref).

    Resamples patients (paired when ``ref`` is given).
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    aucs, diffs = [], []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        yb = y[i]
        if yb.min() == yb.max():
            continue
        a = _auroc_fast(yb, p[i])
        aucs.append(a)
        if ref is not None:
            diffs.append(a - _auroc_fast(yb, ref[i]))
    lo, hi = np.percentile(aucs, [2.5, 97.5]) if aucs else (np.nan, np.nan)
    if ref is not None and diffs:
        dlo, dhi = np.percentile(diffs, [2.5, 97.5])
        return float(lo), float(hi), float(dlo), float(dhi)
    return float(lo), float(hi), None, None


def binary_metrics(
    y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, float | list[float]]:
    """AUROC (with bootstrap CI), AUPRC, Brier score and ECE of probabilities ``p``."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y {y.shape} and p {p.shape} must be equal 1-d shapes")
    if y.min() == y.max():
        raise ValueError("AUROC needs both classes among the labels")
    out: dict[str, float | list[float]] = {
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": ece(y, p),
    }
    if n_boot:
        lo, hi, _, _ = bootstrap_auroc(y, p, n_boot, seed)
        out["auroc_ci"] = [lo, hi]
    return out
