"""Probability calibration (Platt-style temperature and bias) and risk-tier thresholds."""

from __future__ import annotations

import numpy as np
import torch

from model.types import TIERS

#: Validation-risk quantiles that separate low | moderate | high.
TIER_QUANTILES = (0.60, 0.85)


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, steps: int = 200
) -> tuple[float, float]:
    """Fit sigmoid(a * logit + b) to binary labels by minimising the log loss.

    ``a = 1/T`` is an inverse temperature; ``b`` corrects the base rate.  With one class
    only, the identity (1, 0) is returned.

    Args:
        logits: (N,) raw logits on the validation split.
        labels: (N,) 0/1 labels.
        steps: LBFGS iterations at most.
    """
    y = np.asarray(labels, dtype=np.float64)
    if logits.shape != y.shape or y.ndim != 1:
        raise ValueError(f"logits {logits.shape} and labels {y.shape} must be equal 1-d shapes")
    if y.min() == y.max():
        return 1.0, 0.0
    x = torch.tensor(logits, dtype=torch.float64)
    t = torch.tensor(y)
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], t)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in params.detach())
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return 1.0, 0.0
    return a, b


def tier_thresholds(probabilities: np.ndarray) -> tuple[float, float]:
    """(moderate, high) thresholds from validation risks at :data:`TIER_QUANTILES`."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no validation probabilities to set tier thresholds")
    lo, hi = (float(np.quantile(p, q)) for q in TIER_QUANTILES)
    return lo, max(hi, lo + 1e-6)


def tier(probability: float, thresholds: tuple[float, float]) -> str:
    """``low`` below the moderate threshold, ``high`` at or above the high one."""
    moderate, high = thresholds
    if probability >= high:
        return TIERS[2]
    if probability >= moderate:
        return TIERS[1]
    return TIERS[0]
