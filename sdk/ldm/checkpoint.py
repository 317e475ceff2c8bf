"""Load and save Stable Diffusion 1.x / 2.x weights: diffusers folders and original single files.

``from_pretrained(path)`` accepts
  * a diffusers pipeline folder (``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``,
    optional ``tokenizer/`` and ``scheduler/``) -> :class:`LatentDiffusion`;
  * a single diffusers component folder (``config.json`` + weights) -> the component module;
  * an original single file (``.ckpt`` / ``.safetensors`` with ``model.diffusion_model.*``,
    ``first_stage_model.*``, ``cond_stage_model.*``) -> :class:`LatentDiffusion`.
``save_pretrained`` writes the diffusers layout, ``save_original`` the single-file layout. Every
mismatch is one :class:`CheckpointError` naming the file and the offending keys.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from genrt.errors import CheckpointError
from genrt.fileio import write_text_atomic
from genrt.sampling import SchedulerConfig
from genrt.sdk.checkpoint import find_weights_file, load_state_dict_strict, read_state_dict, save_safetensors
from genrt.sdk.ldm import diffusers_format as fmt
from genrt.sdk.ldm import original_format as orig
from genrt.sdk.ldm.autoencoder import AutoencoderKL
from genrt.sdk.ldm.config import LDMConfig, get_config
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.text_encoder import CLIPTextEncoder, load_tokenizer
from genrt.sdk.ldm.unet import UNet2DCondition

# Weight files of a component folder, in order of preference.
COMPONENT_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                     "diffusion_pytorch_model.bin", "pytorch_model.bin")
# Key prefixes of original files that are not network weights: the training schedule's buffers, EMA
# copies and the autoencoder's training loss (LPIPS, discriminator).
_ORIGINAL_IGNORED = ("model_ema.", "first_stage_model.loss.", "betas", "alphas_cumprod", "alphas_cumprod_prev",
                     "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                     "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                     "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                     "logvar")


def from_pretrained(path: str | Path, config: str | LDMConfig | None = None,
                    prediction_type: str | None = None) -> nn.Module:
    """Load weights from ``path`` (see the module docstring).

    ``config`` (a registry name or an :class:`LDMConfig`) is used for single files, whose sizes are
    otherwise taken from the detected family (``sd15`` for CLIP-text files, ``sd21`` for OpenCLIP);
    ``prediction_type`` overrides the file's or preset's ("epsilon" for SD 2.x-base files).
    """
    path = Path(path)
    if path.is_file():
        return load_original(path, config, prediction_type)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}",
                              fix="pass a diffusers folder or a .ckpt/.safetensors file")
    if (path / "model_index.json").is_file():
        return load_pipeline_folder(path, prediction_type)
    if (path / "config.json").is_file():
        return load_component(path)
    raise CheckpointError(f"{path} has neither model_index.json nor config.json",
                          fix="pass a diffusers pipeline folder or one of its component folders")


def load_component(folder: str | Path) -> UNet2DCondition | AutoencoderKL | CLIPTextEncoder:
    """A diffusers ``unet/``, ``vae/`` or ``text_encoder/`` folder -> our module with its weights."""
    folder = Path(folder)
    config = fmt.read_json(folder / "config.json")
    source = folder / "config.json"
    kind = config.get("_class_name") or (config.get("architectures") or [None])[0]
    if kind == "UNet2DConditionModel":
        module = UNet2DCondition(fmt.unet_config_from_diffusers(config, source))
    elif kind == "AutoencoderKL":
        module = AutoencoderKL(fmt.vae_config_from_diffusers(config, source))
    elif kind == "CLIPTextModel":
        module = CLIPTextEncoder(fmt.text_config_from_transformers(config, source))
    else:
        raise CheckpointError(f"{source}: component {kind!r} is not part of Stable Diffusion 1.x / 2.x",
                              fix="pass a UNet2DConditionModel, AutoencoderKL or CLIPTextModel folder")
    weights = find_weights_file(folder, COMPONENT_WEIGHTS)
    state = read_state_dict(weights)
    if isinstance(module, CLIPTextEncoder):
        state = module.from_canonical(state)
    load_state_dict_strict(module, state, str(weights))
    return module.eval()


def load_pipeline_folder(folder: str | Path, prediction_type: str | None = None) -> LatentDiffusion:
    """A diffusers pipeline folder -> :class:`LatentDiffusion` (tokenizer included when present)."""
    folder = Path(folder)
    index = fmt.read_json(folder / "model_index.json")
    for part in ("unet", "vae", "text_encoder"):
        if part not in index or not (folder / part).is_dir():
            raise CheckpointError(f"{folder} has no {part}/ component",
                                  fix="pass a Stable Diffusion pipeline folder (unet/, vae/, text_encoder/)")
    unet, vae, text = (load_component(folder / part) for part in ("unet", "vae", "text_encoder"))
    if not isinstance(unet, UNet2DCondition) or not isinstance(vae, AutoencoderKL) \
            or not isinstance(text, CLIPTextEncoder):
        raise CheckpointError(f"{folder}: unet/, vae/ and text_encoder/ hold the wrong component types",
                              fix="pass a Stable Diffusion pipeline folder")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler = fmt.read_json(scheduler_file) if scheduler_file.is_file() else None
    prediction = "epsilon"
    if scheduler is not None:  # every field as diffusers reads it; one genrt does not implement is refused here
        prediction = SchedulerConfig.from_dict(scheduler, str(scheduler_file)).resolve().schedule.prediction_type
    sample_size = fmt.read_json(folder / "unet" / "config.json").get("sample_size", 64)
    config = LDMConfig(
        name=folder.name,
        unet=unet.config,
        vae=vae.config,
        text_encoder=text.config,
        prediction_type=prediction_type or prediction,
        scheduler_config=scheduler,
        latent_scaling_factor=vae.config.scaling_factor,
        image_size=sample_size * vae.config.downsample_factor,
    )
    tokenizer = load_tokenizer(folder / "tokenizer") if (folder / "tokenizer").is_dir() else None
    return LatentDiffusion(config, tokenizer, unet=unet, vae=vae, text_encoder=text).eval()


def _resolve_config(config: str | LDMConfig | None, openclip: bool) -> LDMConfig:
    if config is None:
        return get_config("sd21" if openclip else "sd15")
    return get_config(config) if isinstance(config, str) else config


def load_original(path: str | Path, config: str | LDMConfig | None = None,
                  prediction_type: str | None = None) -> LatentDiffusion:
    """An original single-file checkpoint -> :class:`LatentDiffusion` (no tokenizer)."""
    path = Path(path)
    state = read_state_dict(path)
    if not any(k.startswith(orig.UNET_PREFIX) for k in state):
        family = "SD-XL" if any(k.startswith("conditioner.embedders.") for k in state) else "another model family"
        raise CheckpointError(f"{path} is not a Stable Diffusion 1.x/2.x checkpoint (it looks like {family}: "
                              f"no {orig.UNET_PREFIX}* keys)", fix="pass an SD 1.x / 2.x .ckpt or .safetensors")
    openclip = any(k.startswith(orig.SD2_TEXT_PREFIX) for k in state)
    if not openclip and not any(k.startswith(orig.SD1_TEXT_PREFIX) for k in state):
        raise CheckpointError(f"{path} has no text encoder ({orig.SD1_TEXT_PREFIX}* or {orig.SD2_TEXT_PREFIX}*)",
                              fix="pass a full Stable Diffusion checkpoint, not a U-Net-only file")
    config = _resolve_config(config, openclip)
    if prediction_type is not None:
        config = config.replace(prediction_type=prediction_type)
    state = {k: v for k, v in state.items() if not k.startswith(_ORIGINAL_IGNORED)}
    # Map and check every component on a weightless (meta) model first, so that a mismatching file
    # fails fast instead of after the random initialisation of a billion parameters.
    with torch.device("meta"):
        skeleton = LatentDiffusion(config)
    parts = _original_parts(skeleton, state, openclip, path)
    with warnings.catch_warnings():  # torch warns that copying into meta tensors does nothing
        warnings.simplefilter("ignore", UserWarning)
        for name, (mapped, source) in parts.items():
            load_state_dict_strict(getattr(skeleton, name), mapped, source)
    model = LatentDiffusion(config)
    for name, (mapped, source) in parts.items():
        load_state_dict_strict(getattr(model, name), mapped, source)
    return model.eval()


def _original_parts(model: LatentDiffusion, state: dict, openclip: bool, path: Path) -> dict[str, tuple[dict, str]]:
    """Component name -> (its state dict under our keys, a description of the source for errors)."""
    config = model.config
    unet_map = {theirs: ours for ours, theirs in orig.unet_key_map(config.unet, model.unet.state_dict()).items()}
    unet_state = {unet_map.get(k, k): v for k, v in state.items() if k.startswith(orig.UNET_PREFIX)}
    vae_map = {theirs: ours for ours, theirs in orig.vae_key_map(config.vae, model.vae.state_dict()).items()}
    vae_state = {vae_map.get(k, k): orig.vae_from_original(k, v) for k, v in state.items()
                 if k.startswith(orig.VAE_PREFIX)}
    if openclip:
        text_state = orig.sd2_text_from_original(
            {k: v for k, v in state.items() if k.startswith(orig.SD2_TEXT_PREFIX)},
            config.text_encoder.num_hidden_layers)
        text_source = f"{path} (OpenCLIP text encoder, {orig.SD2_TEXT_PREFIX}*)"
    else:
        text_state = {k[len(orig.SD1_TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(orig.SD1_TEXT_PREFIX)}
        text_source = f"{path} (CLIP text encoder, {orig.SD1_TEXT_PREFIX}*)"
    return {
        "unet": (unet_state, f"{path} (U-Net, {orig.UNET_PREFIX}*)"),
        "vae": (vae_state, f"{path} (autoencoder, {orig.VAE_PREFIX}*)"),
        "text_encoder": (model.text_encoder.from_canonical(text_state), text_source),
    }


def original_state_dict(model: LatentDiffusion, text_layout: str | None = None) -> dict[str, torch.Tensor]:
    """The single-file state dict of ``model``; ``text_layout`` "hf" (SD 1.x) or "openclip" (SD 2.x),
    by default "openclip" for gelu text encoders."""
    if text_layout is None:
        text_layout = "openclip" if model.config.text_encoder.hidden_act == "gelu" else "hf"
    if text_layout not in ("hf", "openclip"):
        raise CheckpointError(f"text_layout {text_layout!r} is unknown", fix="use 'hf' or 'openclip'")
    out = {}
    unet_state = model.unet.state_dict()
    for ours, theirs in orig.unet_key_map(model.config.unet, unet_state).items():
        out[theirs] = unet_state[ours]
    vae_state = model.vae.state_dict()
    for ours, theirs in orig.vae_key_map(model.config.vae, vae_state).items():
        out[theirs] = orig.vae_to_original(ours, vae_state[ours])
    text_state = model.text_encoder.canonical_state_dict()
    if text_layout == "openclip":
        out.update(orig.sd2_text_to_original(text_state))
    else:
        out.update({orig.SD1_TEXT_PREFIX + k: v for k, v in text_state.items()})
    return out


def save_original(model: LatentDiffusion, path: str | Path, text_layout: str | None = None) -> None:
    """Write ``model`` as an original single ``.safetensors`` file (see :func:`original_state_dict`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} does not end in .safetensors", fix="save single files as .safetensors")
    save_safetensors(original_state_dict(model, text_layout), path)


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_pretrained(model: LatentDiffusion, folder: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Write ``model`` as a diffusers pipeline folder (safetensors weights, config.json per component); floating
    weights are stored as ``dtype`` (float16: half the size, as diffusers' fp16 folders; loading casts back)."""
    folder = Path(folder)

    def weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}

    config = model.config
    scheduler = (dict(config.scheduler_config) if config.scheduler_config is not None
                 else fmt.scheduler_config_to_diffusers(config.schedule_fields()))
    _write_json(folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"] if model.tokenizer is not None else [None, None],
        "scheduler": ["diffusers", scheduler["_class_name"]],
    })
    _write_json(folder / "unet" / "config.json", fmt.unet_config_to_diffusers(config.unet, config.latent_size))
    save_safetensors(weights(model.unet.state_dict()), folder / "unet" / "diffusion_pytorch_model.safetensors")
    vae_config = dataclasses.replace(config.vae, scaling_factor=config.latent_scaling_factor)
    _write_json(folder / "vae" / "config.json", fmt.vae_config_to_diffusers(vae_config, config.image_size))
    save_safetensors(weights(model.vae.state_dict()), folder / "vae" / "diffusion_pytorch_model.safetensors")
    text_config = model.text_encoder.transformer.config.to_dict()
    text_config["architectures"] = ["CLIPTextModel"]
    # the dtype transformers runs it in (else a float16 file loads as float16 beside diffusers' float32 U-Net)
    text_config["dtype"] = str(next(model.text_encoder.parameters()).dtype).removeprefix("torch.")
    _write_json(folder / "text_encoder" / "config.json", text_config)
    save_safetensors(weights(model.text_encoder.canonical_state_dict()),
                     folder / "text_encoder" / "model.safetensors")
    _write_json(folder / "scheduler" / "scheduler_config.json", scheduler)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(folder / "tokenizer"))
