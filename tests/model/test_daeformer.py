"""DAE-Former modules: shapes, finiteness, bad arguments."""

from __future__ import annotations

import pytest
import torch

from model.daeformer import DAEFormer, DAEFormerEncoder
from model.daeformer.channel_attention import ChannelAttention
from model.daeformer.dual_block import DualTransformerBlock
from model.daeformer.efficient_attention import EfficientAttention
from model.daeformer.mix_ffn import MixFFN
from model.daeformer.patch_embed import OverlapPatchEmbed
from model.daeformer.patch_expand import PatchExpand
from model.daeformer.skip_cross_attention import SkipCrossAttention


def test_attention_blocks_keep_token_shape() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8)  # (B, N=4x4, C)
    for mod in (EfficientAttention(8, 8, 8, 2), ChannelAttention(8, 2)):
        y = mod(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert DualTransformerBlock(8, 2, 2)(x, 4, 4).shape == x.shape
    assert MixFFN(8, 16)(x, 4, 4).shape == x.shape
    assert SkipCrossAttention(8, 2)(x, torch.randn_like(x)).shape == x.shape


def test_efficient_attention_is_permutation_equivariant() -> None:
    torch.manual_seed(0)
    att = EfficientAttention(8, 8, 8, 1)
    x = torch.randn(1, 10, 8)
    perm = torch.randperm(10)
    assert torch.allclose(att(x)[:, perm], att(x[:, perm]), atol=1e-5)


def test_patch_embed_and_expand_shapes() -> None:
    tokens, h, w = OverlapPatchEmbed(1, 8, 7, 4)(torch.randn(2, 1, 32, 32))
    assert (tokens.shape, h, w) == ((2, 64, 8), 8, 8)
    up, h2, w2 = PatchExpand(8, 4, 2)(tokens, h, w)
    assert (up.shape, h2, w2) == ((2, 256, 4), 16, 16)


@pytest.mark.parametrize("stride", [2, 4])
def test_daeformer_segments_at_input_resolution(stride: int) -> None:
    torch.manual_seed(0)
    net = DAEFormer(1, 3, (8, 16, 16), (1, 1, 1), stride, 1, 2)
    logits, bottleneck = net.forward_with_features(torch.rand(3, 1, 32, 32))
    assert logits.shape == (3, 3, 32, 32)
    side = 32 // (4 * stride)
    assert bottleneck.shape == (3, side * side, 16)
    assert torch.isfinite(logits).all()
    assert net.forward_features(torch.rand(1, 1, 32, 32)).shape == (1, 16, side, side)


def test_encoder_forward_features_lists_three_stages() -> None:
    enc = DAEFormerEncoder(1, (8, 16, 16), (1, 1, 1), 2, 1, 2)
    feats = enc.forward_features(torch.rand(1, 1, 32, 32))
    assert [(t.shape[-1], h) for t, h, _ in feats] == [(8, 16), (16, 8), (16, 4)]


@pytest.mark.parametrize(
    "build",
    [
        lambda: EfficientAttention(8, 6, 8, 4),
        lambda: ChannelAttention(10, 3),
        lambda: MixFFN(0, 4),
        lambda: OverlapPatchEmbed(1, 8, 2, 4),
        lambda: PatchExpand(8, 0),
        lambda: SkipCrossAttention(9, 2),
        lambda: DualTransformerBlock(8, 1, 0),
        lambda: DAEFormerEncoder(1, (8, 16), (1, 1), 2),  # type: ignore[arg-type]
        lambda: DAEFormerEncoder(1, (8, 16, 16), (1, 1, 1), 3),
        lambda: DAEFormer(1, 1),
    ],
)
def test_bad_arguments_raise_value_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()


def test_wrong_input_shapes_raise_value_error() -> None:
    net = DAEFormer(1, 3, (8, 16, 16), (1, 1, 1), 2, 1, 2)
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.rand(1, 1, 36, 36))
    with pytest.raises(ValueError):
        net.encoder.forward_features(torch.rand(1, 32, 32))
    with pytest.raises(ValueError):
        SkipCrossAttention(8)(torch.rand(1, 4, 8), torch.rand(1, 16, 8))
