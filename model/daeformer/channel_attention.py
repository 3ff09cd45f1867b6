"""Transpose (channel) attention: cross-covariance attention as in XCiT (Ali et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """Attention across channels: a (d x d) map per head from L2-normalised Q and K.

    Cost is linear in the number of tokens; a learnable temperature per head scales the
    cosine similarities before the softmax.

    Args:
        dim: channels of the input tokens.
        heads: attention heads (``dim`` must divide by it).
    """

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"dim ({dim}) must be positive and divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # (B, N, C)
        qkv = self.qkv(x).view(b, n, 3, self.heads, c // self.heads)  # (B, N, 3, h, d)
        qkv = qkv.permute(2, 0, 3, 4, 1)  # (3, B, h, d, N)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, h, d, d)
        attn = attn.softmax(dim=-1)
        out = attn @ v  # (B, h, d, N)
        out = out.permute(0, 3, 1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj(out)
