"""Overlapping patch embedding: a strided convolution followed by LayerNorm."""

from __future__ import annotations

import torch
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """Turn a feature map into a token grid, down-sampled by ``stride``.

    Args:
        in_chans: input channels.
        dim: output token channels.
        kernel: convolution kernel (larger than stride, so patches overlap).
        stride: down-sampling factor.
    """

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        if in_chans <= 0 or dim <= 0 or stride <= 0 or kernel < stride:
            raise ValueError(
                f"bad patch embedding: in_chans={in_chans} dim={dim} kernel={kernel} "
                f"stride={stride}"
            )
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, C, h, w)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return self.norm(x), h, w
