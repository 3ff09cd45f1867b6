"""One decoder stage: patch expanding, skip-connection cross attention, dual blocks."""

from __future__ import annotations

import torch
from torch import nn

from model.daeformer.dual_block import DualTransformerBlock
from model.daeformer.patch_expand import PatchExpand
from model.daeformer.skip_cross_attention import SkipCrossAttention


class DecoderStage(nn.Module):
    """Up-sample the coarser decoder tokens x2, fuse the skip by SCCA, refine.

    Args:
        in_dim: channels of the coarser decoder tokens.
        skip_dim: channels of the encoder skip at this resolution (output channels).
        depth: dual blocks after the fusion.
        heads: attention heads.
        mlp_ratio: Mix-FFN expansion.
    """

    def __init__(
        self, in_dim: int, skip_dim: int, depth: int = 1, heads: int = 1, mlp_ratio: int = 4
    ) -> None:
        super().__init__()
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.expand = PatchExpand(in_dim, skip_dim, scale=2)
        self.cross = SkipCrossAttention(skip_dim, heads)
        self.merge = nn.Linear(2 * skip_dim, skip_dim)
        self.blocks = nn.ModuleList(
            DualTransformerBlock(skip_dim, heads, mlp_ratio) for _ in range(depth)
        )

    def forward(
        self, x: torch.Tensor, h: int, w: int, skip: torch.Tensor
    ) -> tuple[torch.Tensor, int, int]:
        up, h2, w2 = self.expand(x, h, w)  # (B, 4*h*w, C_skip)
        attended = self.cross(skip, up)  # (B, N, C_skip)
        y = self.merge(torch.cat([up, attended + skip], dim=-1))  # (B, N, C_skip)
        for block in self.blocks:
            y = block(y, h2, w2)
        return y, h2, w2
