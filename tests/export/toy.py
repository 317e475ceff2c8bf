"""Small components built from the shared sdk blocks, to test the export machinery on its own."""

from __future__ import annotations

import torch
from torch import nn

from genrt.export.folder import FamilyExport
from genrt.export.spec import ComponentSpec, SymbolRange, TensorSpec, float_dtype_name
from genrt.sdk.nn import (
    Attention,
    Downsample,
    ResnetBlock,
    SpatialSelfAttention,
    TimestepEmbedding,
    Upsample,
    sinusoidal_embedding,
)
from genrt.settings import VqganSettings

# The toy components are exported as a vqgan folder, which needs vqgan settings; no pipeline reads them.
TOY_SETTINGS = VqganSettings(downsample_factor=4, n_embed=16, image_size=16, block_size=17, n_condition_tokens=1,
                             condition_vocab_size=1, n_layer=1, n_head=1, head_dim=4)


class ToyUNet(nn.Module):
    """sample (B, 4, h, w), timestep (B,) float32, context (B, T, 16) -> (B, 4, h, w); h, w even."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.channels = channels
        self.time = TimestepEmbedding(channels, 2 * channels)
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.down = Downsample(channels, asymmetric_padding=True)
        self.block = ResnetBlock(channels, 2 * channels, temb_channels=2 * channels, groups=8)
        self.mid_attn = SpatialSelfAttention(2 * channels, groups=8)
        self.norm = nn.LayerNorm(2 * channels)
        self.cross = Attention(2 * channels, 16, heads=2, dim_head=16)
        self.up = Upsample(2 * channels, channels)
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, sample, timestep, context):
        temb = self.time(sinusoidal_embedding(timestep, self.channels).to(sample.dtype))
        h = self.down(self.conv_in(sample))
        h = self.mid_attn(self.block(h, temb))
        batch, channels, height, width = h.shape
        tokens = h.flatten(2).transpose(1, 2)  # (B, h*w, C)
        tokens = tokens + self.cross(self.norm(tokens), context)
        h = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.conv_out(self.up(h))


def toy_unet_spec(precision: str = "fp32", seed: int = 0) -> ComponentSpec:
    torch.manual_seed(seed)
    model = ToyUNet()
    dtype = float_dtype_name(precision)
    return ComponentSpec(
        name="toy_unet",
        module=lambda: model,
        inputs=(
            TensorSpec("sample", dtype, ("B", 4, "h", "w")),
            TensorSpec("timestep", "float32", ("B",), low=0, high=1000, uniform=True),
            TensorSpec("context", dtype, ("B", "T", 16)),
        ),
        outputs=(TensorSpec("model_output", dtype, ("B", 4, "h", "w")),),
        symbols={
            "B": SymbolRange(1, 2, 3),
            "h": SymbolRange(4, 8, 16, multiple_of=2),
            "w": SymbolRange(4, 12, 16, multiple_of=2),
            "T": SymbolRange(1, 5, 9),
        },
    )


class NearestCode(nn.Module):
    """The codebook search of a vector quantiser: (B, D, h, w) -> indices (B, h, w) int32."""

    def __init__(self, codes: int = 64, dim: int = 8):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(codes, dim))

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1)  # (B, h, w, D)
        distance = (flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.codebook.t()
                    + self.codebook.pow(2).sum(-1))  # (B, h, w, codes)
        return distance.argmin(-1).to(torch.int32)


class ToyEncoder(nn.Module):
    """image (B, 3, H, W) -> indices (B, H/2, W/2) int32."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.down = Downsample(8, asymmetric_padding=True)
        self.quantize = NearestCode()

    def forward(self, image):
        return self.quantize(self.down(self.conv(image)))


def toy_encoder_spec(precision: str = "fp32", seed: int = 0) -> ComponentSpec:
    torch.manual_seed(seed)
    model = ToyEncoder()
    return ComponentSpec(
        name="toy_encoder",
        module=lambda: model,
        inputs=(TensorSpec("image", float_dtype_name(precision), ("B", 3, "H", "W")),),
        outputs=(TensorSpec("indices", "int32", ("B", "H/2", "W/2")),),
        symbols={
            "B": SymbolRange(1, 1, 2),
            "H": SymbolRange(4, 8, 12, multiple_of=2),
            "W": SymbolRange(4, 8, 12, multiple_of=2),
        },
        fp32_modules={"codebook_search": (NearestCode,)},
    )


def toy_plan(precision: str = "fp32", specs: list[ComponentSpec] | None = None) -> FamilyExport:
    """A vqgan-family plan of ``specs`` in ``precision`` (default: the toy encoder, then the toy U-Net)."""
    specs = [toy_encoder_spec(precision), toy_unet_spec(precision)] if specs is None else specs
    return FamilyExport(family="vqgan", config="toy", precision=precision, components={s.name: s for s in specs},
                        settings=TOY_SETTINGS)
