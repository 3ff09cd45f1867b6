"""Mix-FFN: a feed-forward block with a 3x3 depthwise convolution (positional cue)."""

from __future__ import annotations

import torch
from torch import nn


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv over the token grid -> GELU -> Linear.

    Args:
        dim: channels of the tokens.
        hidden: hidden channels.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if dim <= 0 or hidden <= 0:
            raise ValueError(f"dim ({dim}) and hidden ({hidden}) must be positive")
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, C), N = h * w
        if n != h * w:
            raise ValueError(f"token count {n} != {h}x{w}")
        y = self.fc1(x)  # (B, N, Hd)
        y = y.transpose(1, 2).reshape(b, -1, h, w)  # (B, Hd, h, w)
        y = self.dw(y).flatten(2).transpose(1, 2)  # (B, N, Hd)
        return self.fc2(self.act(y))  # (B, N, C)
