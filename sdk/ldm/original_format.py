"""Key mapping between our (diffusers-layout) state dicts and original Stable Diffusion single files.

An original checkpoint holds ``model.diffusion_model.*`` (the openaimodel U-Net),
``first_stage_model.*`` (the taming-style autoencoder) and ``cond_stage_model.*`` (SD 1.x:
``transformer.*`` = HF CLIPTextModel with its canonical ``text_model.*`` keys; SD 2.x: ``model.*`` =
OpenCLIP with fused qkv projections).
Each component has a name map (our key -> original key) built from its config, used in both
directions; weights whose shapes differ (1x1-conv vs linear attention in the autoencoder, fused vs
split qkv in OpenCLIP) are converted explicitly.
"""

from __future__ import annotations

import re

import torch

from genrt.sdk.ldm.config import AutoencoderKLConfig, UNetConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for ours, theirs in table.items():
        if rest == ours or rest.startswith(ours + "."):
            return theirs + rest[len(ours):]
    return rest


def unet_key_map(config: UNetConfig, keys) -> dict[str, str]:
    """Our U-Net key -> original ``model.diffusion_model.`` key, for every key in ``keys``."""
    per_level = config.layers_per_block + 1  # input_blocks per level (resnets + downsampler)
    mapping = {}
    for key in keys:
        parts = key.split(".")
        if parts[0] in ("conv_in",):
            new = "input_blocks.0.0." + ".".join(parts[1:])
        elif parts[0] == "time_embedding":
            new = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + ".".join(parts[2:])
        elif parts[0] == "conv_norm_out":
            new = "out.0." + ".".join(parts[1:])
        elif parts[0] == "conv_out":
            new = "out.2." + ".".join(parts[1:])
        elif parts[0] == "mid_block":
            index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
            rest = ".".join(parts[3:])
            new = f"middle_block.{index}." + (_rename(rest, _UNET_RESNET) if parts[1] == "resnets" else rest)
        else:
            level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if parts[0] == "down_blocks":
                if kind == "downsamplers":
                    new = f"input_blocks.{(level + 1) * per_level}.0.op." + rest[len("conv."):]
                else:
                    index = 1 + level * per_level + j
                    new = f"input_blocks.{index}." + (
                        "0." + _rename(rest, _UNET_RESNET) if kind == "resnets" else "1." + rest)
            else:
                mirrored = len(config.block_out_channels) - 1 - level
                if kind == "upsamplers":
                    slot = 2 if config.attention_levels[mirrored] else 1
                    new = f"output_blocks.{level * per_level + per_level - 1}.{slot}." + rest
                else:
                    index = level * per_level + j
                    new = f"output_blocks.{index}." + (
                        "0." + _rename(rest, _UNET_RESNET) if kind == "resnets" else "1." + rest)
        mapping[key] = UNET_PREFIX + new
    return mapping


def vae_key_map(config: AutoencoderKLConfig, keys) -> dict[str, str]:
    """Our autoencoder key -> original ``first_stage_model.`` key, for every key in ``keys``."""
    levels = len(config.block_out_channels)
    mapping = {}
    for key in keys:
        new = key
        match = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
        if match:
            side, direction, level, kind, j, rest = match.groups()
            level = int(level) if side == "encoder" else levels - 1 - int(level)  # decoder.up is stored reversed
            if kind == "resnets":
                new = f"{side}.{direction}.{level}.block.{j}.{_rename(rest, _VAE_RESNET)}"
            else:
                new = f"{side}.{direction}.{level}.{'downsample' if direction == 'down' else 'upsample'}.{rest}"
        match = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
        if match:
            side, kind, j, rest = match.groups()
            if kind == "resnets":
                new = f"{side}.mid.block_{int(j) + 1}.{_rename(rest, _VAE_RESNET)}"
            else:
                new = f"{side}.mid.attn_1.{_rename(rest, _VAE_ATTENTION)}"
        new = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", new)
        mapping[key] = VAE_PREFIX + new
    return mapping


def vae_to_original(key: str, value: torch.Tensor) -> torch.Tensor:
    """The original stores the mid attention's q/k/v/proj_out as 1x1 convs: (C, C) -> (C, C, 1, 1)."""
    if ".mid_block.attentions." in key and key.endswith(".weight") and value.ndim == 2:
        return value[:, :, None, None]
    return value


def vae_from_original(key: str, value: torch.Tensor) -> torch.Tensor:
    if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 4:
        return value[:, :, 0, 0]
    return value


_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}
# ... and the names outside the resblocks (after "text_model." -> after SD2_TEXT_PREFIX)
_OPENCLIP_OUTSIDE = {"embeddings.token_embedding.weight": "token_embedding.weight",
                     "embeddings.position_embedding.weight": "positional_embedding",
                     "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def sd2_text_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel weights (canonical ``text_model.*`` keys) -> OpenCLIP ``cond_stage_model.model.*``
    (q, k, v fused into in_proj)."""
    out = {}
    for key, value in state.items():
        rest = key[len("text_model."):]
        if rest in _OPENCLIP_OUTSIDE:
            out[SD2_TEXT_PREFIX + _OPENCLIP_OUTSIDE[rest]] = value
        else:
            match = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)$", rest)
            layer, name, kind = match.groups()
            base = f"{SD2_TEXT_PREFIX}transformer.resblocks.{layer}."
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                if name == "self_attn.q_proj":
                    prefix = f"text_model.encoder.layers.{layer}.self_attn."
                    fused = [state[f"{prefix}{p}_proj.{kind}"] for p in "qkv"]
                    out[f"{base}attn.in_proj_{kind}"] = torch.cat(fused, dim=0)
            else:
                out[base + _OPENCLIP_LAYER[name] + "." + kind] = value
    return out


def sd2_text_from_original(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP ``cond_stage_model.model.*`` -> canonical ``text_model.*`` keys, keeping the first
    ``layers`` resblocks.

    SD 2.x conditions on the penultimate layer, so the last resblock, the text projection and the
    logit scale of the file are unused and dropped. Keys this function does not know are kept
    under their original names so that strict loading reports them.
    """
    inverse = {theirs: ours for ours, theirs in _OPENCLIP_LAYER.items()}
    outside = {theirs: ours for ours, theirs in _OPENCLIP_OUTSIDE.items()}
    out = {}
    for key, value in state.items():
        rest = key[len(SD2_TEXT_PREFIX):]
        ours = "text_model."
        if rest in outside:
            out[ours + outside[rest]] = value
        elif rest in ("text_projection", "logit_scale", "attn_mask"):
            continue
        else:
            # "ln_1.weight", "mlp.c_fc.bias", and the fused "attn.in_proj_weight" / "attn.in_proj_bias"
            match = re.match(r"transformer\.resblocks\.(\d+)\.(.*?)[._](weight|bias)$", rest)
            if match is None or (match.group(2) not in inverse and match.group(2) != "attn.in_proj"):
                out[key] = value
                continue
            layer, name, kind = int(match.group(1)), match.group(2), match.group(3)
            if layer >= layers:
                continue
            base = f"{ours}encoder.layers.{layer}."
            if name == "attn.in_proj":
                for letter, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{letter}_proj.{kind}"] = chunk
            else:
                out[f"{base}{inverse[name]}.{kind}"] = value
    return out
