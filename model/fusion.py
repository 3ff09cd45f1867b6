"""Attention fusion of the modality embeddings with per-patient modality weights.

The design of the seed study: the text embedding queries all modality embeddings by
multi-head attention; a softmax weight network gives each patient's modality weights;
the weighted sum of the embeddings plus the attention output (residual) is refined by
an attention path and an MLP path, blended by a learned gate.  Missing modalities are
masked before every softmax, so their weights are exactly 0; with no text a learned
query token stands in for it.
"""

from __future__ import annotations

import torch
from torch import nn


class ModalityFusion(nn.Module):
    """Fuse M modality embeddings (B, M, D) under a presence mask (B, M).

    Args:
        dim: embedding size.
        heads: attention heads.
        n_modalities: number of modality tokens.
        query_index: the modality whose embedding is the query (text).
        dropout: attention and MLP dropout.
    """

    def __init__(
        self, dim: int, heads: int, n_modalities: int, query_index: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"dim ({dim}) must be positive and divisible by heads ({heads})")
        if not 0 <= query_index < n_modalities:
            raise ValueError(f"query_index {query_index} outside 0..{n_modalities - 1}")
        self.query_index = query_index
        self.modality_embed = nn.Parameter(torch.zeros(n_modalities, dim))
        self.query_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.modality_embed, std=0.02)
        nn.init.normal_(self.query_token, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.weight_net = nn.Sequential(
            nn.Linear(2 * dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 1)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.refine_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.refine_mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.gate = nn.Linear(dim, 1)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the fused embedding (B, D) and modality weights (B, M).

        Args:
            tokens: modality embeddings (B, M, D); rows of missing modalities are ignored.
            present: (B, M) bool; every row needs at least one True.
        """
        b, m, d = tokens.shape  # (B, M, D)
        if present.shape != (b, m):
            raise ValueError(f"mask shape {tuple(present.shape)} != {(b, m)}")
        present = present.bool()
        if not bool(present.any(dim=1).all()):
            raise ValueError("every patient needs at least one modality present")
        x = torch.where(present[..., None], tokens, torch.zeros_like(tokens))
        x = x + self.modality_embed  # (B, M, D)
        has_query = present[:, self.query_index][:, None]  # (B, 1)
        query = torch.where(has_query, x[:, self.query_index], self.query_token.expand(b, d))
        query = query[:, None]  # (B, 1, D)
        missing = ~present  # key_padding_mask: True = ignore
        attended, _ = self.attn(query, x, x, key_padding_mask=missing, need_weights=False)
        attended = attended[:, 0]  # (B, D)
        scores = self.weight_net(torch.cat([x, attended[:, None].expand(b, m, d)], dim=-1))
        scores = scores[..., 0].masked_fill(missing, float("-inf"))  # (B, M)
        weights = scores.softmax(dim=1)  # exactly 0 where missing
        fused = self.norm1((weights[..., None] * x).sum(1) + attended)  # (B, D)
        refined_attn, _ = self.refine_attn(
            fused[:, None], x, x, key_padding_mask=missing, need_weights=False
        )
        refined_attn = refined_attn[:, 0]  # (B, D)
        refined_mlp = self.refine_mlp(fused)  # (B, D)
        g = torch.sigmoid(self.gate(fused))  # (B, 1)
        out = self.norm2(fused + g * refined_attn + (1 - g) * refined_mlp)
        return out, weights
