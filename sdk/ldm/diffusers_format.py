"""Translate diffusers ``config.json`` files to our configs and back.

Only the options that Stable Diffusion 1.x / 2.x use are accepted; a config that asks for anything
else (SD-XL add-embeddings, class embeddings, other block types...) is refused with the option named,
rather than loaded into a model that would compute something different.
"""

from __future__ import annotations

import json
from pathlib import Path

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import refuse_unknown_fields
from genrt.sdk.ldm.config import SCHEDULE_PRESETS, AutoencoderKLConfig, TextEncoderConfig, UNetConfig

# diffusers options that must keep these values for the model to be an SD 1.x / 2.x U-Net.
_UNET_FIXED = {
    "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "encoder_hid_dim": None,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim_type": None,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
}
# UNet2DConditionModel fields read into UNetConfig, and those that do not change an inference result
# (dropout is off in eval; addition_embed_type_num_heads only matters with an addition embedding).
_UNET_READ = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
              "layers_per_block", "num_attention_heads", "attention_head_dim", "transformer_layers_per_block",
              "cross_attention_dim", "use_linear_projection", "upcast_attention", "norm_num_groups", "norm_eps",
              "flip_sin_to_cos", "freq_shift"}
_UNET_INERT = {"sample_size", "dropout", "addition_embed_type_num_heads"}
_VAE_FIXED = {"act_fn": "silu", "shift_factor": None, "use_quant_conv": True, "use_post_quant_conv": True,
              "latents_mean": None, "latents_std": None}
_VAE_READ = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
             "layers_per_block", "latent_channels", "norm_num_groups", "mid_block_add_attention", "scaling_factor"}
# force_upcast tells diffusers to run a float16 pipeline's VAE in float32; genrt's precision is chosen at export.
_VAE_INERT = {"sample_size", "force_upcast"}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"config file not found: {path}", fix="pass a diffusers model or pipeline folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}", fix="re-download or re-save the model") from None


def _check_fixed(config: dict, fixed: dict, source: Path) -> None:
    for key, value in fixed.items():
        if key in config and config[key] != value:
            raise CheckpointError(
                f"{source}: {key}={config[key]!r} is not supported (Stable Diffusion 1.x/2.x uses {value!r})",
                fix="load a Stable Diffusion 1.x / 2.x model",
            )


def _per_level(value, levels: int, name: str, source: Path) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels
    if len(values) != levels:
        raise CheckpointError(f"{source}: {name} has {len(values)} entries for {levels} levels",
                              fix="fix the config.json")
    return values


def unet_config_from_diffusers(config: dict, source: Path) -> UNetConfig:
    """A ``UNet2DConditionModel`` config.json -> :class:`UNetConfig`."""
    refuse_unknown_fields(config, _UNET_READ | _UNET_INERT | set(_UNET_FIXED), source, "UNet2DConditionModel")
    _check_fixed(config, _UNET_FIXED, source)
    down = tuple(config.get("down_block_types", ()))
    up = tuple(config.get("up_block_types", ()))
    known_down = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
    known_up = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
    if not down or any(b not in known_down for b in down) or any(b not in known_up for b in up):
        raise CheckpointError(f"{source}: block types {down} / {up} are not those of Stable Diffusion",
                              fix="load a Stable Diffusion 1.x / 2.x U-Net")
    attention = tuple(known_down[b] for b in down)
    if tuple(known_up[b] for b in reversed(up)) != attention:
        raise CheckpointError(f"{source}: up_block_types {up} do not mirror down_block_types {down}",
                              fix="load a Stable Diffusion 1.x / 2.x U-Net")
    levels = len(down)
    # diffusers stores the number of heads under attention_head_dim unless num_attention_heads is set.
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    for name in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim"):
        if isinstance(config.get(name), (list, tuple)):
            raise CheckpointError(f"{source}: per-level {name} is not supported", fix="use a single value")
    return UNetConfig(
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4),
        block_out_channels=_per_level(config["block_out_channels"], levels, "block_out_channels", source),
        layers_per_block=config.get("layers_per_block", 2),
        attention_levels=attention,
        attention_heads=_per_level(heads, levels, "attention_head_dim", source),
        transformer_layers=config.get("transformer_layers_per_block", 1),
        cross_attention_dim=config.get("cross_attention_dim", 1280),
        use_linear_projection=bool(config.get("use_linear_projection", False)),
        upcast_attention=bool(config.get("upcast_attention", False)),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
    )


def unet_config_to_diffusers(config: UNetConfig, sample_size: int) -> dict:
    levels = config.attention_levels
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "flip_sin_to_cos": config.flip_sin_to_cos,
        "freq_shift": config.freq_shift,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)],
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "attention_head_dim": list(config.attention_heads),
        "transformer_layers_per_block": config.transformer_layers,
        "cross_attention_dim": config.cross_attention_dim,
        "use_linear_projection": config.use_linear_projection,
        "upcast_attention": config.upcast_attention,
        "norm_num_groups": config.norm_num_groups,
        "norm_eps": config.norm_eps,
        **{key: value for key, value in _UNET_FIXED.items() if value is not None},
    }


def vae_config_from_diffusers(config: dict, source: Path) -> AutoencoderKLConfig:
    """An ``AutoencoderKL`` config.json -> :class:`AutoencoderKLConfig`."""
    refuse_unknown_fields(config, _VAE_READ | _VAE_INERT | set(_VAE_FIXED), source, "AutoencoderKL")
    _check_fixed(config, _VAE_FIXED, source)
    levels = len(config["block_out_channels"])
    if tuple(config.get("down_block_types", ())) != ("DownEncoderBlock2D",) * levels \
            or tuple(config.get("up_block_types", ())) != ("UpDecoderBlock2D",) * levels:
        raise CheckpointError(f"{source}: block types are not those of the Stable Diffusion autoencoder",
                              fix="load an AutoencoderKL of Stable Diffusion 1.x / 2.x")
    return AutoencoderKLConfig(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        latent_channels=config.get("latent_channels", 4),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config.get("layers_per_block", 1),
        norm_num_groups=config.get("norm_num_groups", 32),
        mid_block_attention=config.get("mid_block_add_attention", True),
        scaling_factor=config.get("scaling_factor", 0.18215),
    )


def vae_config_to_diffusers(config: AutoencoderKLConfig, sample_size: int) -> dict:
    levels = len(config.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "latent_channels": config.latent_channels,
        "norm_num_groups": config.norm_num_groups,
        "mid_block_add_attention": config.mid_block_attention,
        "scaling_factor": config.scaling_factor,
        "sample_size": sample_size,
        **{key: value for key, value in _VAE_FIXED.items() if value is not None},
    }


def text_config_from_transformers(config: dict, source: Path) -> TextEncoderConfig:
    """A ``CLIPTextModel`` config.json -> :class:`TextEncoderConfig`."""
    if config.get("model_type") not in ("clip_text_model", None) or \
            config.get("architectures", ["CLIPTextModel"]) != ["CLIPTextModel"]:
        raise CheckpointError(
            f"{source}: text encoder {config.get('architectures')} / {config.get('model_type')} is not a CLIPTextModel",
            fix="load a Stable Diffusion 1.x / 2.x text encoder",
        )
    defaults = TextEncoderConfig()
    fields = {name: config.get(name, getattr(defaults, name)) for name in TextEncoderConfig.__dataclass_fields__}
    return TextEncoderConfig(**fields)


def scheduler_config_to_diffusers(fields: dict) -> dict:
    """A schedule preset's fields -> the diffusers ``DDIMScheduler`` config genrt's DDIM runs it as (clip_sample
    off, abar 1 after the last step)."""
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": fields["num_train_timesteps"],
        "beta_schedule": fields["beta_schedule"],
        "beta_start": fields["beta_start"],
        "beta_end": fields["beta_end"],
        "prediction_type": fields["prediction_type"],
        "timestep_spacing": fields["timestep_spacing"],
        "steps_offset": fields["steps_offset"],
        "clip_sample": False,
        "set_alpha_to_one": True,
    }
