"""Skip-connection cross attention (SCCA) of the DAE-Former decoder."""

from __future__ import annotations

import torch
from torch import nn


class SkipCrossAttention(nn.Module):
    """Efficient cross attention between the encoder skip and the up-sampled decoder.

    The encoder's skip features give the queries; the decoder's up-sampled features give
    keys and values, summarised into a global (d_k x d_v) context as in efficient
    attention, so the cost stays linear in the number of tokens.

    Args:
        dim: channels of both inputs.
        heads: attention heads.
    """

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"dim ({dim}) must be positive and divisible by heads ({heads})")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if skip.shape != up.shape:
            raise ValueError(f"skip {tuple(skip.shape)} and decoder {tuple(up.shape)} differ")
        b, n, c = skip.shape  # (B, N, C)
        h = self.heads
        q = self.q(self.norm_q(skip)).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, d)
        kv = self.norm_kv(up)
        k = self.k(kv).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, d)
        v = self.v(kv).view(b, n, h, -1).transpose(1, 2)  # (B, h, N, d)
        context = k.softmax(dim=-2).transpose(-2, -1) @ v  # (B, h, d, d)
        out = q.softmax(dim=-1) @ context  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, N, C)
