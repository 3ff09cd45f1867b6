"""DAE-Former segmentation network: encoder, two decoder stages, final expanding head."""

from __future__ import annotations

import torch
from torch import nn

from model.daeformer.decoder_stage import DecoderStage
from model.daeformer.encoder import DAEFormerEncoder
from model.daeformer.patch_expand import PatchExpand


class DAEFormer(nn.Module):
    """U-shaped DAE-Former that outputs per-pixel class logits at input resolution.

    Args:
        in_chans: image channels.
        num_classes: segmentation classes.
        dims: encoder stage channels.
        depths: dual blocks per encoder stage (the decoder mirrors stages 2 and 1).
        first_stride: down-sampling of the first patch embedding (2 or 4).
        heads: attention heads.
        mlp_ratio: Mix-FFN expansion.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 3,
        dims: tuple[int, int, int] = (128, 320, 512),
        depths: tuple[int, int, int] = (2, 2, 2),
        first_stride: int = 4,
        heads: int = 1,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.encoder = DAEFormerEncoder(in_chans, dims, depths, first_stride, heads, mlp_ratio)
        self.dec2 = DecoderStage(dims[2], dims[1], depths[1], heads, mlp_ratio)
        self.dec1 = DecoderStage(dims[1], dims[0], depths[0], heads, mlp_ratio)
        self.final_expand = PatchExpand(dims[0], dims[0], scale=first_stride)
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.stride = 4 * first_stride

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck map (B, C_3, H/stride, W/stride) of images (B, C, H, W)."""
        return self.encoder(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits (B, K, H, W) and the bottleneck tokens (B, N3, C_3)."""
        b, _, hh, ww = x.shape  # (B, C, H, W)
        if hh % self.stride or ww % self.stride:
            raise ValueError(f"image side {hh}x{ww} must be a multiple of {self.stride}")
        (s1, h1, w1), (s2, h2, w2), (s3, h3, w3) = self.encoder.forward_features(x)
        y, h, w = self.dec2(s3, h3, w3, s2)  # (B, N2, C_2)
        y, h, w = self.dec1(y, h, w, s1)  # (B, N1, C_1)
        y, h, w = self.final_expand(y, h, w)  # (B, H*W, C_1)
        y = y.transpose(1, 2).reshape(b, -1, h, w)  # (B, C_1, H, W)
        return self.head(y), s3  # (B, K, H, W), (B, N3, C_3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]
