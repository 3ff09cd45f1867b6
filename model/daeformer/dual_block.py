"""The dual transformer block of DAE-Former: spatial then channel attention."""

from __future__ import annotations

import torch
from torch import nn

from model.daeformer.channel_attention import ChannelAttention
from model.daeformer.efficient_attention import EfficientAttention
from model.daeformer.mix_ffn import MixFFN


class DualTransformerBlock(nn.Module):
    """Pre-norm residual block: efficient attention + Mix-FFN, channel attention + Mix-FFN.

    Args:
        dim: token channels.
        heads: heads of both attentions.
        mlp_ratio: Mix-FFN hidden size / dim.
    """

    def __init__(self, dim: int, heads: int = 1, mlp_ratio: int = 4) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        self.norm1 = nn.LayerNorm(dim)
        self.spatial = EfficientAttention(dim, dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn1 = MixFFN(dim, dim * mlp_ratio)
        self.norm3 = nn.LayerNorm(dim)
        self.channel = ChannelAttention(dim, heads)
        self.norm4 = nn.LayerNorm(dim)
        self.ffn2 = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.spatial(self.norm1(x))  # (B, N, C)
        x = x + self.ffn1(self.norm2(x), h, w)
        x = x + self.channel(self.norm3(x))
        x = x + self.ffn2(self.norm4(x), h, w)
        return x  # (B, N, C)
