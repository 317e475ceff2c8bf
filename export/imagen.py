"""Export contract of the Imagen cascade (T5 encoder, base 64x64 U-Net, two SR U-Nets), per docs/contracts.md.

Components (``B2``: up to twice the user's batch, the [uncond; cond] rows of classifier-free guidance;
``T``: text tokens, 1 .. the encoder's max_length unless ``--sequence-length`` says otherwise):

- ``t5_encoder``: input_ids (B2, T) int32, attention_mask (B2, T) int32 -> text_embeddings (B2, T, D)
- ``base_unet``: sample (B2, 3, 64, 64), timestep (B2,) float32, text_embeddings (B2, T, D),
  text_mask (B2, T) int32 -> model_output (B2, C_out, 64, 64); the base stage runs at one resolution.
- ``sr_unet_256`` / ``sr_unet_1024``: as ``base_unet`` plus low_res (B2, 3, H, W) (already upsampled)
  and noise_level (B2,) int32; H, W range from a quarter of the stage's resolution (at least two
  strides) up to it, in multiples of the U-Net's stride (crops and smaller outputs use the same engine).

The cascade's stage resolutions are fixed by its config, so ``--resolution`` is refused. Weights:
random, or one safetensors file of the sdk modules' state dicts under the component names
(``t5_encoder.*``, ``base_unet.*``, ``sr_unet_256.*``, ``sr_unet_1024.*``). A DeepFloyd IF diffusers
folder as ``--checkpoint`` (stage II as ``--checkpoint-sr``) is exported by :mod:`genrt.export.deepfloyd`
through the same component builders (:func:`t5_spec`, :func:`base_unet_spec`, :func:`sr_unet_spec`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from genrt.errors import InputError
from genrt.export.folder import FamilyExport
from genrt.export.options import ExportOptions, Range
from genrt.export.spec import ComponentSpec, SymbolRange, TensorSpec, float_dtype_name
from genrt.export.tokenizer import StandinVocabulary, tokenizer_source
from genrt.export.weights import Weights
from genrt.sdk.imagen.config import (
    CASCADES,
    CascadeConfig,
    ImagenUNetConfig,
    T5EncoderConfig,
    cascade_config,
    imagen_unet_config,
    text_encoder_config,
)
from genrt.settings import ImagenSettings, ImagenStageSettings

FAMILY = "imagen"
# Component name of each stage of a three-stage cascade, base first.
STAGE_COMPONENTS = ("base_unet", "sr_unet_256", "sr_unet_1024")
# The frozen T5 encoder each cascade was trained with.
TEXT_ENCODER_OF = {"imagen": "t5-v1_1-xxl", "tiny": "tiny-t5"}
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


def config_names() -> list[str]:
    return sorted(CASCADES)


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


def stage_scheduler(cascade: CascadeConfig, unet: ImagenUNetConfig) -> dict:
    """ScheduleConfig fields of one stage: the cascade's schedule (1000 steps, epsilon prediction), with
    learned variance when the U-Net predicts 6 channels."""
    from genrt.sdk.diffusion import ScheduleConfig

    variance = "learned_range" if unet.out_channels == 2 * unet.in_channels else "fixed_small"
    return dataclasses.asdict(ScheduleConfig(beta_schedule=cascade.beta_schedule, variance_type=variance))


def imagen_settings(cascade: CascadeConfig, text: T5EncoderConfig) -> ImagenSettings:
    """The manifest's ``settings``: per-stage resolution, guidance and schedule, and the text settings."""
    names = (cascade.base,) + cascade.super_resolution
    return ImagenSettings(
        stages=tuple(
            ImagenStageSettings(component=component, resolution=size, guidance_scale=scale,
                                scheduler=stage_scheduler(cascade, imagen_unet_config(name)))
            for component, name, size, scale in zip(STAGE_COMPONENTS, names, cascade.resolutions,
                                                    cascade.guidance_scales)
        ),
        sr_noise_level=cascade.sr_noise_level,
        threshold_percentile=cascade.threshold_percentile,
        max_length=text.max_length,
    )


def plan(config_name: str | None, precision: str, options: ExportOptions) -> FamilyExport:
    """The imagen components of cascade ``config_name`` (``imagen`` or ``tiny``), or of a DeepFloyd IF
    diffusers folder given as ``--checkpoint`` (and ``--checkpoint-sr``), see :mod:`genrt.export.deepfloyd`."""
    if options.checkpoint is not None and Path(options.checkpoint).is_dir():
        from genrt.export import deepfloyd

        if config_name is not None:
            raise InputError(f"--config {config_name} given with the folder {options.checkpoint}",
                             fix="drop --config: a DeepFloyd IF folder names its own architecture")
        return deepfloyd.plan(precision, options)
    if options.checkpoint_sr is not None:
        raise InputError("--checkpoint-sr needs a DeepFloyd IF stage I folder as --checkpoint",
                         fix="pass the stage I pipeline folder (model_index.json, unet/, ...) as --checkpoint")
    if config_name is None:
        raise InputError("imagen exports need --config (its checkpoint does not name the architecture)",
                         fix=f"pass --config with one of {', '.join(config_names())}")
    if options.resolution is not None:
        cascade = cascade_config(config_name)
        raise InputError(
            f"the {config_name} cascade runs at fixed resolutions {cascade.resolutions}; --resolution does not apply",
            fix="drop --resolution for imagen exports",
        )
    plan = plan_for(cascade_config(config_name), text_encoder_config(TEXT_ENCODER_OF[config_name]),
                    precision, options, config_name)
    return dataclasses.replace(plan, options=options.record())


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


def plan_for(cascade: CascadeConfig, text: T5EncoderConfig, precision: str, options: ExportOptions,
             name: str) -> FamilyExport:
    """The components of an explicit cascade (tests use small stage resolutions of the tiny U-Nets)."""
    from genrt.sdk.imagen.text_encoder import T5TextEncoder
    from genrt.sdk.imagen.unet import ImagenUNet

    if len(cascade.resolutions) != len(STAGE_COMPONENTS):
        raise InputError(f"cascade {name} has {len(cascade.resolutions)} stages",
                         fix=f"export cascades of {len(STAGE_COMPONENTS)} stages (base, SR 256, SR 1024)")
    weights = Weights(options)
    symbols = text_symbols(options, text.max_length)

    def unet_factory(component: str, unet_name: str):
        config = imagen_unet_config(unet_name)
        if config.text_dim != text.d_model:
            raise InputError(
                f"U-Net {unet_name} reads {config.text_dim}-wide text embeddings, the T5 encoder gives {text.d_model}",
                fix="pair the cascade with the T5 encoder it was trained with",
            )
        return config, lambda: weights.get(f"{component}.", lambda: ImagenUNet(config))

    t5 = lambda: weights.get("t5_encoder.", lambda: T5TextEncoder(text))  # noqa: E731
    specs = [t5_spec(t5, text.vocab_size, text.d_model, precision, symbols)]
    base_config, base = unet_factory("base_unet", cascade.base)
    specs.append(base_unet_spec(base, base_config.in_channels, base_config.out_channels, cascade.resolutions[0],
                                text.d_model, precision, symbols))
    for component, unet_name, size in zip(STAGE_COMPONENTS[1:], cascade.super_resolution, cascade.resolutions[1:]):
        config, factory = unet_factory(component, unet_name)
        specs.append(sr_unet_spec(component, factory, config.in_channels, config.out_channels, size, config.stride,
                                  text.d_model, precision, symbols))
    return FamilyExport(
        family=FAMILY,
        config=name,
        components={spec.name: spec for spec in specs},
        settings=imagen_settings(cascade, text),
        # T5's fixed special ids: <pad> 0, </s> 1 (and no start token).
        tokenizer=tokenizer_source(options.tokenizer, options.random_weights,
                                   StandinVocabulary(vocab_size=text.vocab_size, end_id=1, pad_id=0)),
        text_component="t5_encoder",
    )
