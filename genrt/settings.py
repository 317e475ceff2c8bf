"""Typed per-family settings: the manifest's ``settings`` block, written by export, read by the runtime.

Everything a runtime pipeline needs besides the graphs: schedule, guidance, sizes, tokenizer. Export
fills every field (``genrt.export.ldm`` / ``vqgan`` / ``imagen`` / ``deepfloyd``), the runtime reads the
attributes (``genrt.runtime.pipelines``); both go through :mod:`genrt.typedjson`, so an unknown key or a
value of the wrong type is refused by name. A field added later takes a default, so older writers of
this schema version stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

# ScheduleConfig fields (docs/contracts.md) as JSON; checked by the scheduler's own ScheduleConfig.
Schedule = Mapping[str, Union[bool, int, float, str, tuple[float, ...], None]]
# A diffusers scheduler_config.json as the model folder gives it (genrt.sampling.SchedulerConfig reads it).
DiffusersSchedulerConfig = Mapping[str, Any]


@dataclass(frozen=True)
class TokenizerSettings:
    """The prompt tokenizer of a text family (``DIR/<folder>/tokenizer.json``)."""

    folder: str  # folder relative to the export folder, e.g. "tokenizer/"
    kind: str  # "folder" (the model's own files) or "stand-in" (random weights, no meaning)
    pad_token_id: int | None = None  # id prompts are padded with; None: tokenizer.json's padding


@dataclass(frozen=True)
class LdmSettings:
    """Stable Diffusion 1.x / 2.x text-to-image (and img2img) loop."""

    scheduler: Schedule  # the ScheduleConfig of ``sampler`` (resolved from scheduler_config when there is one)
    latent_scaling_factor: float  # latents are divided by this before the VAE decoder (0.18215 for SD)
    guidance_scale: float  # default classifier-free guidance scale
    image_size: int  # default output height and width in pixels
    latent_channels: int  # channels of the latent (4 for SD)
    vae_factor: int  # pixels per latent cell (8 for SD)
    max_length: int  # tokens per prompt (77 for CLIP)
    tokenizer: TokenizerSettings | None = None  # written with the text encoder
    sampler: str = "ddim"  # default sampler (genrt.sampling name): the folder's scheduler class, resolved
    # the folder's scheduler_config.json; a sampler chosen at run time is resolved from it as diffusers'
    # from_config does (None: genrt's own schedule, used as it is by every sampler)
    scheduler_config: DiffusersSchedulerConfig | None = None
    num_steps: int = 50  # default denoising steps
    unet_factor: int = 1  # the U-Net's total down-sampling (8 for SD): latent sizes are multiples of it


@dataclass(frozen=True)
class VqganSettings:
    """VQGAN code grids and the autoregressive prior that samples them."""

    downsample_factor: int  # pixels per code along each axis
    n_embed: int  # codebook entries
    image_size: int  # training resolution in pixels
    # The prior's fields are None when the export has no prior (a diffusers VQModel folder: encode/decode only).
    block_size: int | None = None  # positions of the prior (condition tokens + codes)
    n_condition_tokens: int | None = None  # condition prefix length (1 for a class id)
    condition_vocab_size: int | None = None  # distinct condition ids (classes)
    n_layer: int | None = None  # prior layers (key/value cache depth)
    n_head: int | None = None  # prior attention heads
    head_dim: int | None = None  # width of one head
    class_names: tuple[str, ...] = ()  # the prompt naming each condition id (a call may pass it); () unnamed
    temperature: float = 1.0  # default sampling temperature
    top_k: int | None = None  # default top-k filter (None: off)
    top_p: float | None = None  # default nucleus filter (None: off)


@dataclass(frozen=True)
class ImagenStageSettings:
    """One stage of the cascade (base, then super-resolution)."""

    component: str  # the stage's U-Net: "base_unet", "sr_unet_256" or "sr_unet_1024"
    resolution: int  # the stage's output height and width in pixels
    guidance_scale: float  # default classifier-free guidance scale of the stage
    scheduler: Schedule  # the stage's noise schedule (also noises the low-res input of an SR stage)
    num_steps: int = 50  # default DDPM steps of the stage


@dataclass(frozen=True)
class ImagenSettings:
    """Imagen-style cascade: T5 -> base -> super-resolution stages."""

    stages: tuple[ImagenStageSettings, ...]  # in cascade order, base first
    sr_noise_level: int  # augmentation level of the low-res input of an SR stage at inference
    threshold_percentile: float  # dynamic thresholding percentile p of x_0
    max_length: int  # T5 tokens per prompt when the encoder's length is dynamic
    threshold_max: float | None = None  # cap on the thresholding scale s (DeepFloyd IF: 1.5)
    tokenizer: TokenizerSettings | None = None  # written with the T5 encoder
    sampler: str = "ddpm"  # default sampler name of every stage

    def stage(self, component: str) -> ImagenStageSettings | None:
        return next((stage for stage in self.stages if stage.component == component), None)


FamilySettings = Union[LdmSettings, VqganSettings, ImagenSettings]

__all__ = ["FamilySettings", "ImagenSettings", "ImagenStageSettings", "LdmSettings", "Schedule",
           "TokenizerSettings", "VqganSettings"]
