"""The hierarchical DAE-Former encoder (three stages of dual transformer blocks)."""

from __future__ import annotations

import torch
from torch import nn

from model.daeformer.dual_block import DualTransformerBlock
from model.daeformer.patch_embed import OverlapPatchEmbed


class DAEFormerEncoder(nn.Module):
    """Three stages: overlapping patch embedding, dual transformer blocks, LayerNorm.

    Stage 1 down-samples by ``first_stride`` (4 in the paper), stages 2 and 3 by 2.

    Args:
        in_chans: image channels (1 for LGE magnitude).
        dims: channels of the three stages.
        depths: dual blocks per stage.
        first_stride: down-sampling of stage 1 (2 or 4).
        heads: attention heads in every block.
        mlp_ratio: Mix-FFN expansion.
    """

    def __init__(
        self,
        in_chans: int = 1,
        dims: tuple[int, int, int] = (128, 320, 512),
        depths: tuple[int, int, int] = (2, 2, 2),
        first_stride: int = 4,
        heads: int = 1,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        if len(dims) != 3 or len(depths) != 3:
            raise ValueError(f"dims and depths need 3 stages, got {dims} and {depths}")
        if first_stride not in (2, 4):
            raise ValueError(f"first_stride must be 2 or 4, got {first_stride}")
        self.dims = tuple(dims)
        self.first_stride = first_stride
        kernels = (7 if first_stride == 4 else 5, 3, 3)
        strides = (first_stride, 2, 2)
        chans = (in_chans, dims[0], dims[1])
        self.embeds = nn.ModuleList(
            OverlapPatchEmbed(chans[i], dims[i], kernels[i], strides[i]) for i in range(3)
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(DualTransformerBlock(dims[i], heads, mlp_ratio) for _ in range(depths[i]))
            for i in range(3)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    def forward_features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
        """Return every stage's tokens with their grid size, fine to coarse.

        Args:
            x: images (B, C, H, W).
        """
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        feats: list[tuple[torch.Tensor, int, int]] = []
        y = x
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms, strict=True):
            tokens, h, w = embed(y)  # (B, h*w, C_i)
            for block in blocks:  # type: ignore[attr-defined]
                tokens = block(tokens, h, w)
            tokens = norm(tokens)
            feats.append((tokens, h, w))
            y = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # (B, C_i, h, w)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck feature map (B, C_3, H/(4*s), W/(4*s))."""
        tokens, h, w = self.forward_features(x)[-1]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
