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
through the same component builders (:mod:`genrt.export.imagen_specs`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genrt.errors import InputError
from genrt.export.folder import FamilyExport
from genrt.export.imagen_specs import FAMILY, base_unet_spec, sr_unet_spec, t5_spec, text_symbols
from genrt.export.options import ExportOptions
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

# Component name of each stage of a three-stage cascade, base first.
STAGE_COMPONENTS = ("base_unet", "sr_unet_256", "sr_unet_1024")
# The frozen T5 encoder each cascade was trained with.
TEXT_ENCODER_OF = {"imagen": "t5-v1_1-xxl", "tiny": "tiny-t5"}



def config_names() -> list[str]:
    return sorted(CASCADES)


def stage_scheduler(cascade: CascadeConfig, unet: ImagenUNetConfig) -> dict:
    """ScheduleConfig fields of one stage: the cascade's schedule (1000 steps, epsilon prediction), with
    learned variance when the U-Net predicts 6 channels."""
    from genrt.sampling import ScheduleConfig

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
        precision=precision,
        components={spec.name: spec for spec in specs},
        settings=imagen_settings(cascade, text),
        # T5's fixed special ids: <pad> 0, </s> 1 (and no start token).
        tokenizer=tokenizer_source(options.tokenizer, options.random_weights,
                                   StandinVocabulary(vocab_size=text.vocab_size, end_id=1, pad_id=0)),
        text_component="t5_encoder",
    )
