"""Efficient (linear-complexity) spatial attention, Shen et al. 2021."""

from __future__ import annotations

import torch
from torch import nn


class EfficientAttention(nn.Module):
    """Spatial attention in O(N) memory: softmax(Q) (softmax_N(K)^T V).

    Queries are normalised over their feature dimension, keys over positions; the
    keys and values are first summarised into a (d_k x d_v) global context per head,
    which every query then reads.

    Args:
        dim: channels of the input tokens.
        key_dim: total channels of queries and keys (split across heads).
        value_dim: total channels of values (split across heads).
        heads: attention heads.
    """

    def __init__(self, dim: int, key_dim: int, value_dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim <= 0 or key_dim <= 0 or value_dim <= 0 or heads <= 0:
            raise ValueError("dim, key_dim, value_dim and heads must be positive")
        if key_dim % heads or value_dim % heads:
            raise ValueError(f"key_dim ({key_dim}) and value_dim ({value_dim}) % heads ({heads})")
        self.heads = heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.q = nn.Linear(dim, key_dim)
        self.k = nn.Linear(dim, key_dim)
        self.v = nn.Linear(dim, value_dim)
        self.proj = nn.Linear(value_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, C)
        h = self.heads
        q = self.q(x).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, dk)
        k = self.k(x).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, dk)
        v = self.v(x).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, dv)
        q = q.softmax(dim=-1)  # over features
        k = k.softmax(dim=-2)  # over positions
        context = k.transpose(-2, -1) @ v  # (B, h, dk, dv)
        out = q @ context  # (B, h, N, dv)
        out = out.transpose(1, 2).reshape(b, n, self.value_dim)  # (B, N, Dv)
        return self.proj(out)  # (B, N, C)
