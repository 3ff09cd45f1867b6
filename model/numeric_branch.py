"""Numeric branch: the feature schema (standardisation) and the MLP encoder."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Standardised values are clipped to +-CLIP.
CLIP = 5.0
#: Inputs of the MAGGIC score; with none of them present no score is derived.
_MAGGIC_CORE = ("age", "lvef", "sbp", "bmi", "creatinine", "nyha_class")


def with_derived(row: Mapping[str, float]) -> dict[str, float]:
    """The row plus derived features: ``maggic_score``, the published integer MAGGIC
    score (Pocock et al. 2013), a strong non-linear summary that a small cohort cannot
    learn from its components."""
    from model.maggic import maggic_score

    out = dict(row)
    if any(k in row and row[k] is not None and math.isfinite(float(row[k])) for k in _MAGGIC_CORE):
        out["maggic_score"] = float(maggic_score(row))
    return out


@dataclass(frozen=True)
class FeatureSchema:
    """Numeric feature names and their normalisation, learned on the training split.

    Args:
        names: feature names in input order.
        means: mean of each (possibly log-transformed) feature over present values.
        stds: standard deviation of each, never 0.
        log: whether the feature is log1p-transformed first (skewed, non-negative).
    """

    names: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    log: tuple[bool, ...]

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, float]], min_present: float = 0.01) -> FeatureSchema:
        """Learn the schema from training rows (feature -> value; absent = missing).

        Args:
            rows: one mapping per training patient.
            min_present: a feature present in a smaller fraction of rows is dropped.
        """
        if not rows:
            raise ValueError("cannot fit a feature schema on zero rows")
        counts: dict[str, list[float]] = {}
        for raw in rows:
            row = with_derived(raw)
            for k, v in row.items():
                if v is not None and math.isfinite(float(v)):
                    counts.setdefault(k, []).append(float(v))
        names, means, stds, logs = [], [], [], []
        for name in sorted(counts):
            vals = np.asarray(counts[name], dtype=np.float64)
            if len(vals) < max(2, min_present * len(rows)):
                continue
            skew = 0.0
            if vals.std() > 0:
                skew = float(((vals - vals.mean()) ** 3).mean() / vals.std() ** 3)
            use_log = bool(vals.min() >= 0 and skew > 2.0)
            t = np.log1p(vals) if use_log else vals
            names.append(name)
            means.append(float(t.mean()))
            stds.append(float(t.std()) if t.std() > 1e-8 else 1.0)
            logs.append(use_log)
        if not names:
            raise ValueError("no numeric feature is present often enough to learn a schema")
        return cls(tuple(names), tuple(means), tuple(stds), tuple(logs))

    @property
    def input_dim(self) -> int:
        """Width of :meth:`transform`'s output: values plus missingness indicators."""
        return 2 * len(self.names)

    def transform(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """(N, 2F) float32: standardised values (0 where missing) then indicators."""
        f = len(self.names)
        out = np.zeros((len(rows), 2 * f), dtype=np.float32)
        mean = np.asarray(self.means)
        std = np.asarray(self.stds)
        index = {n: i for i, n in enumerate(self.names)}
        for r, raw in enumerate(rows):
            for k, v in with_derived(raw).items():
                i = index.get(k)
                if i is None or v is None or not math.isfinite(float(v)):
                    continue
                x = math.log1p(max(float(v), 0.0)) if self.log[i] else float(v)
                out[r, i] = np.clip((x - mean[i]) / std[i], -CLIP, CLIP)
                out[r, f + i] = 1.0
        out[:, f:] = 1.0 - out[:, f:]  # indicator = 1 when missing
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "means": list(self.means),
            "stds": list(self.stds),
            "log": list(self.log),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSchema:
        n = len(d["names"])
        if not (len(d["means"]) == len(d["stds"]) == len(d["log"]) == n):
            raise ValueError("feature schema lists differ in length")
        return cls(
            tuple(d["names"]),
            tuple(float(x) for x in d["means"]),
            tuple(float(x) for x in d["stds"]),
            tuple(bool(x) for x in d["log"]),
        )


class NumericEncoder(nn.Module):
    """MLP from standardised values + missingness indicators to the fusion embedding.

    Args:
        in_dim: input width (2 x number of features).
        hidden: hidden width.
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        if in_dim <= 0 or hidden <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim ({in_dim}), hidden ({hidden}), out_dim ({out_dim}) > 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
            nn.LayerNorm(out_dim),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 2F) -> (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
