"""Loading (and saving) DeepFloyd IF U-Nets in diffusers' format (``unet/config.json`` + weights).

Our :class:`~genrt.sdk.imagen.if_unet.IFUNet` uses diffusers' parameter names, so the state dict maps
one to one; what needs care is the config: :func:`if_unet_config_from_diffusers` reads diffusers'
``UNet2DConditionModel`` config and refuses any setting that is not IF's layout, rather than building
a U-Net that silently computes something else. :func:`save_if_unet` writes the folder diffusers'
``save_pretrained`` would (genrt's own trained models ship that way), without needing diffusers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import find_weights_file, load_state_dict_strict, read_state_dict, refuse_unknown_fields
from genrt.sdk.imagen.config import IFUNetConfig
from genrt.sdk.imagen.if_unet import IFUNet

# Settings of diffusers' UNet2DConditionModel that IF fixes; anything else is a different architecture.
IF_FIXED_SETTINGS = {
    "act_fn": "gelu",
    "addition_embed_type": "text",
    "encoder_hid_dim_type": "text_proj",
    "cross_attention_norm": "group_norm",
    "resnet_time_scale_shift": "scale_shift",
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "only_cross_attention": False,
}
# UNet2DConditionModel options IF leaves at diffusers' defaults; another value is another network.
IF_DEFAULT_SETTINGS = {
    "center_input_sample": False,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "num_class_embeds": None,
    "addition_time_embed_dim": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "reverse_transformer_layers_per_block": None,
}
# Fields read into IFUNetConfig, and those IF's block types never use (dropout is off in eval; the
# transformer and padding options belong to CrossAttn/Downsample2D blocks IF does not have).
IF_READ = {"block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "in_channels",
           "out_channels", "attention_head_dim", "cross_attention_dim", "encoder_hid_dim",
           "addition_embed_type_num_heads", "resnet_out_scale_factor", "resnet_skip_time_act",
           "mid_block_scale_factor", "class_embed_type", "sample_size", "norm_num_groups", "norm_eps"}
IF_INERT = {"dropout", "downsample_padding", "use_linear_projection", "transformer_layers_per_block"}
# Weight files diffusers writes into a model folder, preferred first.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DOWN_TYPES = {"ResnetDownsampleBlock2D": False, "SimpleCrossAttnDownBlock2D": True}
UP_TYPES = {"ResnetUpsampleBlock2D": False, "SimpleCrossAttnUpBlock2D": True}
# The diffusers release whose config format save_if_unet writes.
DIFFUSERS_VERSION = "0.42.1"


def _per_level(value: Any, levels: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels


def if_unet_config_from_diffusers(config: Mapping[str, Any], source: str = "config") -> IFUNetConfig:
    """Our :class:`IFUNetConfig` from a diffusers ``UNet2DConditionModel`` config dict (IF stage I or II)."""
    refuse_unknown_fields(config, IF_READ | IF_INERT | set(IF_FIXED_SETTINGS) | set(IF_DEFAULT_SETTINGS), source,
                          "DeepFloyd IF UNet2DConditionModel")
    wrong = {
        key: config.get(key) for key, value in (IF_FIXED_SETTINGS | IF_DEFAULT_SETTINGS).items()
        if key in config and config[key] != value
    }
    if wrong:
        raise CheckpointError(f"{source} is not a DeepFloyd IF U-Net: {wrong}",
                              fix=f"IF U-Nets use {IF_FIXED_SETTINGS} and diffusers' defaults {IF_DEFAULT_SETTINGS}")
    try:
        channels = tuple(config["block_out_channels"])
        levels = len(channels)
        cross = tuple(DOWN_TYPES[t] for t in config["down_block_types"])
        up_cross = tuple(UP_TYPES[t] for t in config["up_block_types"])
    except KeyError as exc:
        raise CheckpointError(f"{source}: unsupported or missing entry {exc}",
                              fix="pass the unet/config.json of a DeepFloyd IF stage I or II model") from None
    if up_cross != tuple(reversed(cross)):
        raise CheckpointError(f"{source}: up_block_types do not mirror down_block_types")
    class_embed = config.get("class_embed_type")
    if class_embed not in (None, "timestep"):
        raise CheckpointError(f"{source}: class_embed_type {class_embed!r}", fix="IF uses None or 'timestep'")
    head_dim = config["attention_head_dim"]
    if isinstance(head_dim, (list, tuple)):
        if len(set(head_dim)) != 1:
            raise CheckpointError(f"{source}: per-level attention_head_dim {head_dim}", fix="IF uses one head dim")
        head_dim = head_dim[0]
    return IFUNetConfig(
        block_out_channels=channels,
        layers_per_block=_per_level(config["layers_per_block"], levels),
        cross_attention=cross,
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        attention_head_dim=head_dim,
        cross_attention_dim=config["cross_attention_dim"],
        encoder_hid_dim=config["encoder_hid_dim"],
        addition_embed_type_num_heads=config["addition_embed_type_num_heads"],
        resnet_out_scale_factor=float(config.get("resnet_out_scale_factor", 1.0)),
        resnet_skip_time_act=bool(config.get("resnet_skip_time_act", False)),
        mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)),
        noise_level_conditioning=class_embed == "timestep",
        sample_size=config["sample_size"],
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
    )


def load_if_unet(folder: str | Path) -> IFUNet:
    """An :class:`IFUNet` with the weights of a diffusers ``unet`` folder (config.json + weights), eval mode."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in {folder}", fix="pass the `unet` folder of a diffusers IF model")
    weights = find_weights_file(folder, WEIGHT_FILES)
    config = if_unet_config_from_diffusers(json.loads(config_file.read_text()), source=str(config_file))
    model = IFUNet(config)
    load_state_dict_strict(model, read_state_dict(weights), source=str(weights))
    return model.eval()


def if_unet_config_to_diffusers(config: IFUNetConfig) -> dict[str, Any]:
    """The diffusers ``UNet2DConditionModel`` config dict of an IF config (inverse of the reader above)."""
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        **IF_FIXED_SETTINGS,
        **IF_DEFAULT_SETTINGS,
        "sample_size": config.sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": [next(k for k, v in DOWN_TYPES.items() if v == cross) for cross in config.cross_attention],
        "up_block_types": [next(k for k, v in UP_TYPES.items() if v == cross)
                           for cross in reversed(config.cross_attention)],
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": list(config.layers_per_block),
        "attention_head_dim": config.attention_head_dim,
        "cross_attention_dim": config.cross_attention_dim,
        "encoder_hid_dim": config.encoder_hid_dim,
        "addition_embed_type_num_heads": config.addition_embed_type_num_heads,
        "class_embed_type": "timestep" if config.noise_level_conditioning else None,
        "resnet_out_scale_factor": config.resnet_out_scale_factor,
        "resnet_skip_time_act": config.resnet_skip_time_act,
        "mid_block_scale_factor": config.mid_block_scale_factor,
        "norm_num_groups": config.norm_num_groups,
        "norm_eps": config.norm_eps,
    }


def save_if_unet(model: IFUNet, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``folder/config.json`` and ``folder/diffusion_pytorch_model.safetensors`` (weights in ``dtype``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(if_unet_config_to_diffusers(model.config), indent=2) + "\n")
    state = {name: value.detach().to(dtype).contiguous() for name, value in model.state_dict().items()}
    save_file(state, str(folder / WEIGHT_FILES[0]))
    return folder
