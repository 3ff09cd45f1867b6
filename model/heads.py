"""Prediction heads on the fused embedding."""

from __future__ import annotations

import torch
from torch import nn


class PrognosisHeads(nn.Module):
    """Binary outcome logits, cause-class logits and a fibrosis-burden estimate.

    Args:
        dim: fused embedding size.
        n_outcomes: binary outcomes.
        n_causes: cause classes.
        dropout: dropout before the heads.
    """

    def __init__(self, dim: int, n_outcomes: int, n_causes: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim <= 0 or n_outcomes <= 0 or n_causes < 2:
            raise ValueError(f"dim ({dim}) > 0, n_outcomes ({n_outcomes}) > 0, n_causes >= 2")
        self.drop = nn.Dropout(dropout)
        self.outcomes = nn.Linear(dim, n_outcomes)
        self.causes = nn.Linear(dim, n_causes)
        self.burden = nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 1))

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.drop(z)  # (B, D)
        return {
            "logits": self.outcomes(z),  # (B, O)
            "cause_logits": self.causes(z),  # (B, K)
            "burden": torch.sigmoid(self.burden(z)[:, 0]),  # (B,)
        }
