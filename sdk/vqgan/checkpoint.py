"""Load taming-transformers and diffusers VQGAN checkpoints (and taming GPT priors) into our modules.

Key mapping is a pure function from each of *our* parameter names to the name in the foreign
layout, so the same rules load a checkpoint (ours <- theirs) and write one (ours -> theirs):

- taming: our paths are taming's; leaves differ: ``conv_shortcut`` <-> ``nin_shortcut``, attention
  ``group_norm/to_q/to_k/to_v/to_out.0`` (Linear, (C, C)) <-> ``norm/q/k/v/proj_out`` (1x1 conv,
  (C, C, 1, 1)). ``loss.*`` (LPIPS + discriminator) is training state: ignored by the VQModel
  loader, read by ``load_taming_loss`` (``perceptual_loss.net.slice{s}.{i}`` <-> ``net.features.{i}``,
  ``perceptual_loss.lin{l}.model.1`` <-> ``heads.{l}``, ``discriminator.main.*`` unchanged).
- diffusers ``VQModel``: ``down[i].block[j]`` <-> ``down_blocks.i.resnets.j``, ``up[i]`` <->
  ``up_blocks.(L-1-i)``, ``mid.block_1/attn_1/block_2`` <-> ``mid_block.resnets.0/attentions.0/resnets.1``,
  ``norm_out`` <-> ``conv_norm_out``.
- taming GPT (``transformer.*`` of a cond-transformer ckpt, whose first stage is ``first_stage_model.*``):
  ``blocks.i.attn.to_q/to_k/to_v/to_out`` <-> ``blocks.i.attn.query/key/value/proj``,
  ``mlp.fc/proj`` <-> ``mlp.0/mlp.2``; the causal-mask buffer ``attn.mask`` is ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import (_listing, find_weights_file, load_state_dict_strict, read_state_dict,
                                  refuse_unknown_fields)
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.config import PriorConfig, VQGANConfig, VQGANLossConfig, vqgan_config, prior_config
from genrt.sdk.vqgan.losses import VQGANLoss
from genrt.sdk.vqgan.perceptual import VGG16_TAPS
from genrt.sdk.vqgan.prior import GPTPrior

# taming ckpt prefixes that hold training-only or unsupported state (LPIPS/discriminator, cond-stage encoder)
TAMING_IGNORED = ("loss.", "cond_stage_model.")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# diffusers VQModel fields read into VQGANConfig (or checked against the taming layout) ...
VQMODEL_READ = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
                "layers_per_block", "act_fn", "latent_channels", "sample_size", "num_vq_embeddings",
                "norm_num_groups", "vq_embed_dim", "norm_type", "mid_block_add_attention"}
# ... and those that do not change encode/decode: scaling_factor scales latents for a diffusion model on top,
# force_upcast is diffusers' float16 advice, lookup_from_codebook only applies to decoding unquantised latents
# (genrt's decoder always looks indices up in the codebook).
VQMODEL_INERT = {"scaling_factor", "force_upcast", "lookup_from_codebook"}


def taming_vqgan_key(key: str) -> str:
    """Our VQModel parameter name -> the taming-transformers name."""
    key = key.replace(".conv_shortcut.", ".nin_shortcut.")
    key = re.sub(r"\.(attn\.\d+|attn_1)\.group_norm\.", r".\1.norm.", key)
    key = re.sub(r"\.(attn\.\d+|attn_1)\.to_([qkv])\.", r".\1.\2.", key)
    key = re.sub(r"\.(attn\.\d+|attn_1)\.to_out\.0\.", r".\1.proj_out.", key)
    return re.sub(r"^quantize\.(cluster_size|embed_avg)$", r"quantize.embedding.\1", key)


def diffusers_vqgan_key(key: str, levels: int) -> str:
    """Our VQModel parameter name -> the diffusers ``VQModel`` name (``levels`` = len(ch_mult))."""
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.attn\.", r"encoder.down_blocks.\1.attentions.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    match = re.match(r"^decoder\.up\.(\d+)\.(block|attn|upsample)\.(.*)$", key)
    if match:
        level, part, rest = match.groups()
        part = {"block": "resnets", "attn": "attentions", "upsample": "upsamplers.0"}[part]
        key = f"decoder.up_blocks.{levels - 1 - int(level)}.{part}.{rest}"
    key = re.sub(r"\.mid\.block_1\.", ".mid_block.resnets.0.", key)
    key = re.sub(r"\.mid\.attn_1\.", ".mid_block.attentions.0.", key)
    key = re.sub(r"\.mid\.block_2\.", ".mid_block.resnets.1.", key)
    return re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)


def taming_prior_key(key: str) -> str:
    """Our GPTPrior parameter name -> the taming minGPT name (without the ``transformer.`` prefix)."""
    key = re.sub(r"\.attn\.to_q\.", ".attn.query.", key)
    key = re.sub(r"\.attn\.to_k\.", ".attn.key.", key)
    key = re.sub(r"\.attn\.to_v\.", ".attn.value.", key)
    key = re.sub(r"\.attn\.to_out\.", ".attn.proj.", key)
    key = re.sub(r"\.mlp\.fc\.", ".mlp.0.", key)
    key = re.sub(r"\.mlp\.proj\.", ".mlp.2.", key)
    return re.sub(r"\.ln_([12])\.", r".ln\1.", key)


def taming_loss_key(key: str) -> str:
    """Our VQGANLoss parameter name -> the taming name under ``loss.``.

    LPIPS keeps torchvision's indices inside five slices (``net.slice{s}.{i}``, slice s ending at
    tap s) and wraps each head as ``lin{l}.model.1`` (after a dropout); the discriminator is unchanged.
    """
    match = re.match(r"^perceptual_loss\.net\.features\.(\d+)\.(.*)$", key)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        stage = next(s for s, tap in enumerate(VGG16_TAPS, start=1) if index <= tap)
        return f"perceptual_loss.net.slice{stage}.{index}.{rest}"
    return re.sub(r"^perceptual_loss\.heads\.(\d+)\.", r"perceptual_loss.lin\1.model.1.", key)


def _import(module: nn.Module, theirs: Mapping[str, torch.Tensor], name_of: Callable[[str], str],
            source: str, ignored: Callable[[str], bool]) -> None:
    """Load ``theirs`` into ``module`` through ``name_of`` (ours -> theirs); refuse anything left over."""
    ours, missing = {}, []
    for key, expected in module.state_dict().items():
        their_key = name_of(key)
        if their_key not in theirs:
            missing.append(their_key)
            continue
        tensor = theirs[their_key]
        if tensor.shape != expected.shape and tensor.numel() == expected.numel() and tensor.shape[2:] == (1, 1):
            tensor = tensor.reshape(expected.shape)  # taming 1x1 conv (C, C, 1, 1) -> our Linear (C, C)
        ours[key] = tensor
    used = {name_of(key) for key in module.state_dict()}
    unexpected = sorted(k for k in theirs if k not in used and not ignored(k))
    if missing or unexpected:
        problems = [f"{len(missing)} missing keys: {_listing(sorted(missing))}"] if missing else []
        problems += [f"{len(unexpected)} unexpected keys: {_listing(unexpected)}"] if unexpected else []
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems),
                              fix="check that the checkpoint and the config belong to the same model")
    load_state_dict_strict(module, ours, source)


def _export(module: nn.Module, name_of: Callable[[str], str], conv_attention: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in module.state_dict().items():
        if conv_attention and re.search(r"\.(attn\.\d+|attn_1)\.to_(q|k|v|out\.0)\.weight$", key):
            tensor = tensor[:, :, None, None]  # our Linear (C, C) -> taming 1x1 conv (C, C, 1, 1)
        out[name_of(key)] = tensor.detach().clone()
    return out


def _resolve(config, registry_lookup):
    return registry_lookup(config) if isinstance(config, str) else config


def _subdict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def to_taming_state_dict(model: VQModel, prior: GPTPrior | None = None) -> dict[str, torch.Tensor]:
    """Our modules -> a taming state dict: a VQModel ckpt, or with ``prior`` a cond-transformer ckpt
    (``first_stage_model.*`` + ``transformer.*``)."""
    vqgan = _export(model, taming_vqgan_key, conv_attention=True)
    if prior is None:
        return vqgan
    out = {f"first_stage_model.{key}": value for key, value in vqgan.items()}
    out.update({f"transformer.{key}": value for key, value in _export(prior, taming_prior_key, False).items()})
    return out


def load_taming_vqgan(path: str | Path, config: VQGANConfig | str) -> VQModel:
    """A taming ``.ckpt`` (VQModel, or cond transformer with ``first_stage_model.*``) -> VQModel (eval mode)."""
    config = _resolve(config, vqgan_config)
    state_dict = read_state_dict(path)
    if any(key.startswith("first_stage_model.") for key in state_dict):
        state_dict = _subdict(state_dict, "first_stage_model.")
    model = VQModel(config)
    _import(model, state_dict, taming_vqgan_key, str(path), lambda k: k.startswith(TAMING_IGNORED))
    return model.eval()


def load_taming_prior(path: str | Path, config: PriorConfig | str) -> GPTPrior:
    """The ``transformer.*`` GPT of a taming cond-transformer ``.ckpt`` -> GPTPrior (eval mode)."""
    config = _resolve(config, prior_config)
    state_dict = _subdict(read_state_dict(path), "transformer.")
    if not state_dict:
        raise CheckpointError(f"{path} has no 'transformer.*' keys", fix="pass a taming cond-transformer checkpoint")
    prior = GPTPrior(config)
    _import(prior, state_dict, taming_prior_key, str(path), lambda k: k.endswith(".attn.mask"))
    return prior.eval()


def to_taming_loss_state_dict(loss: VQGANLoss) -> dict[str, torch.Tensor]:
    """Our VQGANLoss -> the ``loss.*`` entries of a taming VQGAN ckpt."""
    return {f"loss.{key}": value for key, value in _export(loss, taming_loss_key, False).items()}


def load_taming_loss(path: str | Path, config: VQGANLossConfig = VQGANLossConfig()) -> VQGANLoss:
    """The ``loss.*`` training state of a taming VQGAN ckpt (LPIPS weights, discriminator) -> VQGANLoss,
    e.g. to resume training or to get LPIPS weights without torchvision."""
    state_dict = _subdict(read_state_dict(path), "loss.")
    if not state_dict:
        raise CheckpointError(f"{path} has no 'loss.*' keys", fix="pass a taming VQGAN training checkpoint")
    loss = VQGANLoss(config)
    # taming stores the LPIPS input scaling as buffers; ours are the same constants, not state
    _import(loss, state_dict, taming_loss_key, str(path), lambda k: k.startswith("perceptual_loss.scaling_layer."))
    return loss


def vqgan_config_from_diffusers(config: Mapping, source: str = "config.json") -> VQGANConfig:
    """A diffusers ``VQModel`` config dict -> VQGANConfig (refusing layouts the taming VQGAN cannot express)."""
    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"{source}: {problem}", fix="only taming-style VQModels (group norm, SiLU) are supported")

    refuse_unknown_fields(config, VQMODEL_READ | VQMODEL_INERT, source, "VQModel")
    if config.get("norm_type", "group") != "group" or config.get("act_fn", "silu") != "silu":
        raise refuse(f"norm_type={config.get('norm_type')!r}, act_fn={config.get('act_fn')!r}")
    if not config.get("mid_block_add_attention", True):
        raise refuse("the mid block has no attention")
    channels = list(config.get("block_out_channels", (64,)))
    down = list(config.get("down_block_types", ("DownEncoderBlock2D",)))
    up = list(config.get("up_block_types", ("UpDecoderBlock2D",)))
    if len(down) != len(channels) or len(up) != len(channels):
        raise refuse(f"{len(channels)} block_out_channels but {len(down)} down and {len(up)} up block types")
    if channels[0] == 0 or any(c % channels[0] for c in channels):
        raise refuse(f"block_out_channels {channels} are not multiples of the first")
    resolution = config.get("sample_size", 32)
    resolution = resolution[0] if isinstance(resolution, (list, tuple)) else resolution
    attn_down = {resolution // 2**i for i, kind in enumerate(down) if kind.startswith("Attn")}
    attn_up = {resolution // 2 ** (len(up) - 1 - k) for k, kind in enumerate(up) if kind.startswith("Attn")}
    if attn_down != attn_up:
        raise refuse(f"encoder attention at {sorted(attn_down)} but decoder attention at {sorted(attn_up)}")
    latent = config.get("latent_channels", 3)
    return VQGANConfig(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        ch=channels[0], ch_mult=tuple(c // channels[0] for c in channels),
        num_res_blocks=config.get("layers_per_block", 1), attn_resolutions=tuple(sorted(attn_down)),
        resolution=resolution, z_channels=latent, embed_dim=config.get("vq_embed_dim") or latent,
        n_embed=config.get("num_vq_embeddings", 256), norm_groups=config.get("norm_num_groups", 32),
    )


def load_diffusers_vqgan(folder: str | Path) -> VQModel:
    """A diffusers ``VQModel`` folder (``config.json`` + weights, e.g. from ``save_pretrained``) -> VQModel."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json", fix="pass a diffusers VQModel folder")
    raw = json.loads(config_path.read_text())
    if raw.get("_class_name", "VQModel") != "VQModel":
        raise CheckpointError(f"{config_path} describes a {raw['_class_name']}, not a VQModel",
                              fix="pass the folder of a diffusers VQModel")
    weights = find_weights_file(folder, DIFFUSERS_WEIGHTS)
    config = vqgan_config_from_diffusers(raw, str(config_path))
    model = VQModel(config)
    levels = len(config.ch_mult)
    _import(model, read_state_dict(weights), lambda k: diffusers_vqgan_key(k, levels), str(weights), lambda k: False)
    return model.eval()
