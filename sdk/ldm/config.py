"""Configs of the latent-diffusion family (Stable Diffusion 1.x / 2.x) and a registry of presets.

Sizes follow the released models: SD 1.5 (CLIP ViT-L/14 text, 8 heads per level, 1x1-conv
projections, epsilon prediction) and SD 2.1 (OpenCLIP ViT-H text cut to 23 layers, head dim 64,
linear projections, v-prediction at 768x768). ``tiny`` and ``tiny-sd2`` keep the same structure at
toy sizes for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from genrt.errors import ConfigError
from genrt.sdk.registry import lookup


@dataclass(frozen=True)
class UNetConfig:
    """The conditional U-Net that predicts noise (or v) in latent space."""

    in_channels: int = 4  # latent channels in
    out_channels: int = 4  # latent channels out
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)  # channels per resolution level
    layers_per_block: int = 2  # resnets per down level (up levels have one more)
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # cross-attention per down level (up mirrors)
    attention_heads: tuple[int, ...] = (8, 8, 8, 8)  # heads per level (mid block uses the last)
    transformer_layers: int = 1  # BasicTransformerBlocks per Transformer2D
    cross_attention_dim: int = 768  # width of the text embeddings attended to
    use_linear_projection: bool = False  # Transformer2D proj_in/out: Linear (SD2) or 1x1 Conv (SD1)
    upcast_attention: bool = False  # attention (Q.K^T, softmax) in float32 in half precision (SD 2.1)
    norm_num_groups: int = 32  # GroupNorm groups in resnets and transformers
    norm_eps: float = 1e-5  # GroupNorm eps in resnets and the output norm
    flip_sin_to_cos: bool = True  # sinusoidal timestep features as [cos, sin]
    freq_shift: float = 0.0  # frequency shift of the timestep features

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding (4x the first level's channels)."""
        return 4 * self.block_out_channels[0]

    def validate(self) -> None:
        levels = len(self.block_out_channels)
        if len(self.attention_levels) != levels or len(self.attention_heads) != levels:
            raise ConfigError(
                f"UNetConfig has {levels} levels but {len(self.attention_levels)} attention_levels and "
                f"{len(self.attention_heads)} attention_heads",
                fix="give one entry per level in block_out_channels",
            )
        for channels, heads in zip(self.block_out_channels, self.attention_heads):
            if channels % heads or channels % self.norm_num_groups:
                raise ConfigError(
                    f"UNetConfig level with {channels} channels is not divisible by {heads} heads "
                    f"and {self.norm_num_groups} groups",
                    fix="choose channels that are multiples of the heads and of norm_num_groups",
                )


@dataclass(frozen=True)
class AutoencoderKLConfig:
    """The KL-regularised autoencoder between images and latents (downsampling 2**(levels-1))."""

    in_channels: int = 3  # image channels
    out_channels: int = 3  # reconstructed image channels
    latent_channels: int = 4  # latent channels (moments have twice as many)
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # channels per resolution level
    layers_per_block: int = 2  # resnets per encoder level (decoder levels have one more)
    norm_num_groups: int = 32  # GroupNorm groups
    mid_block_attention: bool = True  # single-head self-attention in the mid blocks
    scaling_factor: float = 0.18215  # latents are multiplied by this before diffusion

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """A CLIP text transformer (built with ``transformers.CLIPTextModel``)."""

    vocab_size: int = 49408  # BPE vocabulary size
    hidden_size: int = 768  # width of the token embeddings (= U-Net cross_attention_dim)
    intermediate_size: int = 3072  # MLP width
    num_hidden_layers: int = 12  # transformer layers actually run
    num_attention_heads: int = 12  # attention heads
    max_position_embeddings: int = 77  # context length (prompts are padded/truncated to it)
    hidden_act: str = "quick_gelu"  # "quick_gelu" (OpenAI CLIP) or "gelu" (OpenCLIP)
    layer_norm_eps: float = 1e-5  # LayerNorm eps
    pad_token_id: int = 1  # id the tokenizer pads with (SD1 pads with end-of-text, SD2 with "!")
    bos_token_id: int = 49406  # <|startoftext|>
    eos_token_id: int = 49407  # <|endoftext|>


# Noise schedules by preset name; fields follow genrt.sampling.ScheduleConfig (docs/contracts.md).
SCHEDULE_PRESETS: dict[str, dict] = {
    # The schedule every SD 1.x / 2.x model was trained with.
    "sd": dict(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="leading",
        steps_offset=1,
        variance_type="fixed_small",
    ),
}


@dataclass(frozen=True)
class LDMConfig:
    """A whole text-to-image latent-diffusion model."""

    name: str  # registry name
    unet: UNetConfig  # denoiser
    vae: AutoencoderKLConfig  # image <-> latent autoencoder
    text_encoder: TextEncoderConfig  # prompt encoder
    schedule: str = "sd"  # key of SCHEDULE_PRESETS
    prediction_type: str = "epsilon"  # what the U-Net predicts: "epsilon" or "v_prediction"
    latent_scaling_factor: float = 0.18215  # latents = vae_mean * factor (SD1/2)
    guidance_scale: float = 7.5  # default classifier-free guidance scale
    image_size: int = 512  # default output height and width in pixels
    # a pipeline folder's scheduler/scheduler_config.json (diffusers' text); None: the ``schedule`` preset
    scheduler_config: Mapping[str, Any] | None = None

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.downsample_factor

    def schedule_fields(self) -> dict:
        """The ScheduleConfig fields of this model (a plain dict, see docs/contracts.md)."""
        if self.schedule not in SCHEDULE_PRESETS:
            raise ConfigError(
                f"unknown schedule preset {self.schedule!r}", fix=f"use one of {sorted(SCHEDULE_PRESETS)}"
            )
        return dict(SCHEDULE_PRESETS[self.schedule], prediction_type=self.prediction_type)

    def scheduler(self, sampler: str | None = None):
        """The ``genrt.sampling.ResolvedScheduler`` to run: the folder's scheduler config read as diffusers'
        ``Class.from_config`` reads it (``sampler`` None: the folder's class), else the schedule preset with
        ``sampler`` (None: DDIM); ``prediction_type`` is this config's."""
        from genrt.sampling import ResolvedScheduler, ScheduleConfig, SchedulerConfig

        if self.scheduler_config is None:
            return ResolvedScheduler(sampler or "ddim", ScheduleConfig(**self.schedule_fields()))
        resolved = SchedulerConfig.from_dict(self.scheduler_config).resolve(sampler)
        return dataclasses.replace(resolved, schedule=resolved.schedule.replace(prediction_type=self.prediction_type))

    def schedule_config(self):
        """This model's ``genrt.sampling.ScheduleConfig`` (of its default sampler)."""
        return self.scheduler().schedule

    def replace(self, **changes) -> "LDMConfig":
        return dataclasses.replace(self, **changes)


_CLIP_VIT_L = TextEncoderConfig()
_OPENCLIP_VIT_H = TextEncoderConfig(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,  # SD2 conditions on the penultimate of the 24 layers
    num_attention_heads=16,
    hidden_act="gelu",
    pad_token_id=0,
)
# Small CLIP for tests: 1000-token vocabulary, 2 layers.
_TINY_TEXT = TextEncoderConfig(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
_TINY_VAE = AutoencoderKLConfig(block_out_channels=(32, 64), layers_per_block=1)
_TINY = LDMConfig(
    name="tiny",
    unet=UNetConfig(
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_levels=(False, True),
        attention_heads=(8, 8),
        cross_attention_dim=32,
    ),
    vae=_TINY_VAE,
    text_encoder=_TINY_TEXT,
    image_size=32,
)

_REGISTRY: dict[str, LDMConfig] = {
    "sd15": LDMConfig(
        name="sd15",
        unet=UNetConfig(),
        vae=AutoencoderKLConfig(),
        text_encoder=_CLIP_VIT_L,
    ),
    "sd21": LDMConfig(
        name="sd21",
        unet=UNetConfig(
            attention_heads=(5, 10, 20, 20),  # head dim 64
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,
        ),
        vae=AutoencoderKLConfig(),
        text_encoder=_OPENCLIP_VIT_H,
        prediction_type="v_prediction",
        image_size=768,
    ),
    "tiny": _TINY,
    # SD 2.x's differences at tiny size: attention at every level, linear projections, a GELU text encoder padding
    # with id 0, v-prediction
    "tiny-sd2": _TINY.replace(
        name="tiny-sd2",
        unet=dataclasses.replace(_TINY.unet, attention_levels=(True, True), attention_heads=(4, 8),  # head dim 8
                                 use_linear_projection=True),
        text_encoder=dataclasses.replace(_TINY_TEXT, hidden_act="gelu", pad_token_id=0),
        prediction_type="v_prediction",
    ),
}


def config_names() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str) -> LDMConfig:
    """The preset called ``name`` (``sd15``, ``sd21``, ``tiny``, ``tiny-sd2``)."""
    return lookup(_REGISTRY, name, "latent-diffusion")
