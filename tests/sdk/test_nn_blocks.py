"""The shared blocks against plain-math references."""

import math

import pytest
import torch
from torch.nn import functional as F

from genrt.sdk.nn import Attention, Downsample, ResnetBlock, SpatialSelfAttention, Upsample, sinusoidal_embedding
from tests.conftest import relative_error


def test_sinusoidal_embedding_matches_formula():
    t = torch.tensor([0.0, 1.0, 999.0])
    emb = sinusoidal_embedding(t, 8, flip_sin_to_cos=True)
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / 4) for i in range(4)], dtype=torch.float64)
    t = t.double()
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    assert relative_error(emb, expected) < 2e-5  # float32 angles up to 999 rad


def test_attention_matches_explicit_softmax_and_honours_mask():
    torch.manual_seed(0)
    attn = Attention(16, context_dim=12, heads=2, dim_head=8).double()
    x, ctx = torch.randn(2, 5, 16).double(), torch.randn(2, 7, 12).double()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = attn(x, ctx, mask)

    q = attn.to_q(x).view(2, 5, 2, 8).transpose(1, 2)
    k = attn.to_k(ctx).view(2, 7, 2, 8).transpose(1, 2)
    v = attn.to_v(ctx).view(2, 7, 2, 8).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 16)
    assert relative_error(out, attn.to_out[0](ref)) < 1e-12
    # masked keys carry no information: changing them changes nothing
    ctx2 = ctx.clone()
    ctx2[1, 4:] = 100.0
    assert torch.equal(attn(x, ctx2, mask)[1], out[1])


@pytest.mark.parametrize("norm", ["default", "scale_shift"])
def test_resnet_block_shapes_and_shortcut(norm):
    block = ResnetBlock(32, 64, temb_channels=16, groups=8, time_embedding_norm=norm, output_scale_factor=2**0.5)
    out = block(torch.randn(2, 32, 9, 11), torch.randn(2, 16))
    assert out.shape == (2, 64, 9, 11)
    with pytest.raises(ValueError, match="time_embedding_norm"):
        ResnetBlock(8, time_embedding_norm="film")


def test_spatial_attention_is_residual():
    block = SpatialSelfAttention(32, groups=8)
    torch.nn.init.zeros_(block.to_out[0].weight)
    torch.nn.init.zeros_(block.to_out[0].bias)
    x = torch.randn(1, 32, 5, 6)
    assert torch.equal(block(x), x)


def test_down_and_up_sampling_sizes():
    x = torch.randn(1, 4, 10, 14)
    assert Downsample(4, asymmetric_padding=True)(x).shape == (1, 4, 5, 7)
    assert Downsample(4, 8)(x).shape == (1, 8, 5, 7)
    assert Downsample(4, use_conv=False)(x).shape == (1, 4, 5, 7)
    up = Upsample(4, use_conv=False)(x)
    assert up.shape == (1, 4, 20, 28) and torch.equal(up[..., ::2, ::2], x)
    assert torch.equal(F.avg_pool2d(up, 2), x)
