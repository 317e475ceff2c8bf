"""Component builders shared by the Imagen cascade (:mod:`genrt.export.imagen`) and DeepFloyd IF
(:mod:`genrt.export.deepfloyd`): the T5 encoder, base and super-resolution U-Net wrappers and specs.

Shapes: ``B`` up to twice the user's batch (the [uncond; cond] rows of classifier-free guidance), ``T`` text
tokens; ``t5_encoder``: input_ids, attention_mask (B, T) int32 -> text_embeddings (B, T, D); ``base_unet``:
sample (B, 3, s, s), timestep (B,), text_embeddings (B, T, D)[, text_mask (B, T)] -> model_output
(B, C_out, s, s); SR stages add low_res (B, 3, H, W) and noise_level (B,) int32.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from genrt.export.options import ExportOptions, Range
from genrt.export.spec import ComponentSpec, SymbolRange, TensorSpec, float_dtype_name

FAMILY = "imagen"
# An SR stage's H, W range from its resolution divided by this up to its resolution ...
SR_MIN_FRACTION = 4
# ... but at least this many strides: a 1x1 deepest feature map leaves GroupNorm only single values
# per group, whose variance is ill-conditioned (float32 graphs already differ by > 1e-4 there).
SR_MIN_STRIDES = 2


def t5_fp32_islands(precision: str) -> dict:
    """float16 T5 keeps its feed-forward layers in float32: T5 v1.1's activations overflow float16's range
    there (transformers keeps ``wo`` in float32 for the same reason); bfloat16 has float32's range."""
    if precision != "fp16":
        return {}
    from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

    return {"t5_feed_forward": (T5DenseGatedActDense, T5DenseActDense)}


class T5EncoderComponent(nn.Module):
    """input_ids (B, T) int32, attention_mask (B, T) int32 -> text_embeddings (B, T, D) (zero at padding when the
    encoder zero-pads: genrt's cascades; DeepFloyd IF keeps T5's outputs there)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)


class BaseUNetComponent(nn.Module):
    """sample (B, 3, H, W), timestep (B,) float32, text_embeddings (B, T, D), text_mask (B, T) int32
    -> model_output (B, C_out, H, W)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text_embeddings, text_mask):
        return self.unet(sample, timestep, text_embeddings, text_mask)


class SRUNetComponent(nn.Module):
    """As :class:`BaseUNetComponent`, plus low_res (B, 3, H, W) upsampled and noise_level (B,) int32."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text_embeddings, text_mask, low_res, noise_level):
        return self.unet(sample, timestep, text_embeddings, text_mask, low_res, noise_level)


class UnmaskedBaseUNetComponent(nn.Module):
    """:class:`BaseUNetComponent` without text_mask: the U-Net attends to every text position, padding
    included (DeepFloyd IF as diffusers runs it)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text_embeddings):
        return self.unet(sample, timestep, text_embeddings)


class UnmaskedSRUNetComponent(nn.Module):
    """:class:`SRUNetComponent` without text_mask (DeepFloyd IF as diffusers runs it)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text_embeddings, low_res, noise_level):
        return self.unet(sample, timestep, text_embeddings, None, low_res, noise_level)


def text_symbols(options: ExportOptions, max_length: int) -> dict:
    """Symbols ``B`` (the [uncond; cond] batch, up to twice the user's) and ``T`` (1 .. max_length tokens)."""
    batch = options.batch_range()
    tokens = options.sequence_length or Range(1, max_length, max_length)
    return {"B": Range(batch.min, 2 * batch.opt, 2 * batch.max).symbol(), "T": tokens.symbol()}


def text_inputs(dtype: str, width: int, masked: bool) -> tuple[TensorSpec, ...]:
    """The U-Nets' text inputs: text_embeddings (B, T, width), and when ``masked`` text_mask (B, T) int32."""
    embeddings = (TensorSpec("text_embeddings", dtype, ("B", "T", width)),)
    return embeddings + ((TensorSpec("text_mask", "int32", ("B", "T"), low=0, high=2),) if masked else ())


def t5_spec(encoder: Callable[[], nn.Module], vocab_size: int, width: int, precision: str,
            symbols: dict) -> ComponentSpec:
    """``t5_encoder``: input_ids, attention_mask (B, T) int32 -> text_embeddings (B, T, width)."""
    return ComponentSpec(
        name="t5_encoder",
        module=lambda: T5EncoderComponent(encoder()),
        inputs=(
            TensorSpec("input_ids", "int32", ("B", "T"), low=0, high=vocab_size),
            TensorSpec("attention_mask", "int32", ("B", "T"), low=0, high=2),
        ),
        outputs=(TensorSpec("text_embeddings", float_dtype_name(precision), ("B", "T", width)),),
        symbols=symbols,
        fp32_modules=t5_fp32_islands(precision),
    )


def base_unet_spec(unet: Callable[[], nn.Module], channels: int, out_channels: int, size: int, text_width: int,
                   precision: str, symbols: dict, masked: bool = True) -> ComponentSpec:
    """``base_unet`` at one fixed ``size``: sample (B, channels, size, size) -> (B, out_channels, size, size);
    ``masked``: the U-Net takes text_mask and ignores padding tokens (False: DeepFloyd IF, no text_mask)."""
    dtype = float_dtype_name(precision)
    wrapper = BaseUNetComponent if masked else UnmaskedBaseUNetComponent
    return ComponentSpec(
        name="base_unet",
        module=lambda: wrapper(unet()),
        inputs=(
            TensorSpec("sample", dtype, ("B", channels, size, size)),
            TensorSpec("timestep", "float32", ("B",), low=0, high=1000, uniform=True),
        ) + text_inputs(dtype, text_width, masked),
        outputs=(TensorSpec("model_output", dtype, ("B", out_channels, size, size)),),
        symbols=symbols,
    )


def sr_unet_spec(name: str, unet: Callable[[], nn.Module], channels: int, out_channels: int, size: int, stride: int,
                 text_width: int, precision: str, symbols: dict, masked: bool = True) -> ComponentSpec:
    """An SR stage: H, W from a quarter of ``size`` (at least two strides) up to ``size``, multiples of ``stride``;
    ``masked`` as for :func:`base_unet_spec`."""
    dtype = float_dtype_name(precision)
    low = max(SR_MIN_STRIDES * stride, size // SR_MIN_FRACTION // stride * stride)
    side = SymbolRange(low, size, size, multiple_of=stride)
    wrapper = SRUNetComponent if masked else UnmaskedSRUNetComponent
    return ComponentSpec(
        name=name,
        module=lambda: wrapper(unet()),
        inputs=(
            TensorSpec("sample", dtype, ("B", channels, "H", "W")),
            TensorSpec("timestep", "float32", ("B",), low=0, high=1000, uniform=True),
        ) + text_inputs(dtype, text_width, masked) + (
            TensorSpec("low_res", dtype, ("B", channels, "H", "W"), low=-1, high=1, uniform=True),
            TensorSpec("noise_level", "int32", ("B",), low=0, high=1000),
        ),
        outputs=(TensorSpec("model_output", dtype, ("B", out_channels, "H", "W")),),
        symbols=dict(symbols, H=side, W=side),
    )
