"""Patch expanding: a linear layer that trades channels for resolution."""

from __future__ import annotations

import torch
from torch import nn


class PatchExpand(nn.Module):
    """Up-sample a token grid by ``scale`` with a linear map and a pixel shuffle.

    Args:
        dim: input channels.
        out_dim: output channels per up-sampled token.
        scale: up-sampling factor per side.
    """

    def __init__(self, dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        if dim <= 0 or out_dim <= 0 or scale <= 0:
            raise ValueError(f"bad patch expand: dim={dim} out_dim={out_dim} scale={scale}")
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, int, int]:
        b = x.shape[0]  # x: (B, h*w, C)
        s = self.scale
        y = self.expand(x).view(b, h, w, s, s, self.out_dim)  # (B, h, w, s, s, D)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s * w * s, self.out_dim)
        return self.norm(y), h * s, w * s  # (B, (h*s)*(w*s), D)
