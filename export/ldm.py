"""Export contract of the latent-diffusion family (Stable Diffusion 1.x / 2.x), per docs/contracts.md.

Components and their ranges (``f`` = the VAE's down-sampling factor, ``m`` = the U-Net's):

- ``text_encoder``: input_ids (B2, 77) int32 -> text_embeddings (B2, 77, D)
- ``unet``: sample (B2, 4, h, w), timestep (B2,) float32, encoder_hidden_states (B2, 77, D) -> model_output
- ``vae_decoder``: latent (B, 4, h, w) -> image (B, 3, f*h, f*w)
- ``vae_encoder``: image (B, 3, H, W) -> latent_moments (B, 8, H/f, W/f)

``B`` is the user's batch; ``B2`` runs up to twice as many rows because the runtime batches the
unconditional and the conditional prompt of classifier-free guidance through one call. Resolutions
are multiples of ``f * m`` pixels (64 for SD: latents divisible by 8 for the three U-Net down-samplings).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from genrt.errors import InputError
from genrt.export.folder import FamilyExport
from genrt.export.options import ExportOptions, Range
from genrt.export.spec import ComponentSpec, TensorSpec, float_dtype_name
from genrt.export.tokenizer import StandinVocabulary, tokenizer_source
from genrt.export.weights import Weights
from genrt.sdk.ldm.config import LDMConfig, config_names, get_config
from genrt.settings import LdmSettings

FAMILY = "ldm"


class TextEncoderComponent(nn.Module):
    """input_ids (B, 77) int32 -> text_embeddings (B, 77, D)."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids)


class UNetComponent(nn.Module):
    """sample (B, 4, h, w), timestep (B,) float32, encoder_hidden_states (B, 77, D) -> model_output (B, 4, h, w)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        return self.unet(sample, timestep, encoder_hidden_states)


class VaeDecoderComponent(nn.Module):
    """latent (B, 4, h, w), already divided by the scaling factor -> image (B, 3, f*h, f*w)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)


class VaeEncoderComponent(nn.Module):
    """image (B, 3, H, W) in [-1, 1] -> latent_moments (B, 2*4, H/f, W/f): mean and logvar."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image)


def _networks(config: LDMConfig, weights: Weights) -> dict:
    """Lazy factories of the three networks (keys: the attributes of ``genrt.sdk.ldm`` 's whole model)."""
    from genrt.sdk.ldm.autoencoder import AutoencoderKL
    from genrt.sdk.ldm.text_encoder import CLIPTextEncoder
    from genrt.sdk.ldm.unet import UNet2DCondition

    return {
        "unet": lambda: weights.get("unet.", lambda: UNet2DCondition(config.unet)),
        "vae": lambda: weights.get("vae.", lambda: AutoencoderKL(config.vae)),
        "text_encoder": lambda: weights.get("text_encoder.", lambda: CLIPTextEncoder(config.text_encoder)),
    }


def ldm_settings(config: LDMConfig) -> LdmSettings:
    """The manifest's ``settings``: everything the runtime's text-to-image loop needs besides graphs; the
    sampler and schedule resolved from the folder's scheduler config (``LDMConfig.scheduler``)."""
    resolved = config.scheduler()
    return LdmSettings(
        scheduler=dataclasses.asdict(resolved.schedule),
        sampler=resolved.sampler,
        scheduler_config=None if config.scheduler_config is None else dict(config.scheduler_config),
        latent_scaling_factor=config.latent_scaling_factor,
        guidance_scale=config.guidance_scale,
        image_size=config.image_size,
        latent_channels=config.vae.latent_channels,
        vae_factor=config.vae.downsample_factor,
        max_length=config.text_encoder.max_position_embeddings,
        unet_factor=2 ** (len(config.unet.block_out_channels) - 1),
    )


def _load_checkpoint(config_name: str | None, options: ExportOptions):
    """(config, network factories, tokenizer folder) of a diffusers pipeline folder or an original single file."""
    from genrt.sdk.ldm.checkpoint import from_pretrained
    from genrt.sdk.ldm.model import LatentDiffusion

    model = from_pretrained(options.checkpoint, config_name)
    if not isinstance(model, LatentDiffusion):
        raise InputError(
            f"{options.checkpoint} holds a single {type(model).__name__}, not a whole Stable Diffusion model",
            fix="pass the pipeline folder (with model_index.json) or a single-file .ckpt/.safetensors",
        )
    model = model.float().eval().requires_grad_(False)
    networks = {"unet": lambda: model.unet, "vae": lambda: model.vae, "text_encoder": lambda: model.text_encoder}
    folder = Path(options.checkpoint) / "tokenizer"
    return model.config, networks, folder if folder.is_dir() else None


def plan(config_name: str | None, precision: str, options: ExportOptions) -> FamilyExport:
    """The ldm components for ``precision`` and the user's ranges.

    Weights: random (``config_name`` from the registry), or ``options.checkpoint`` — a diffusers pipeline
    folder (its own config; ``config_name`` unused) or an original single file (``config_name``, else
    sd15 / sd21 by its text encoder).
    """
    if options.checkpoint is not None:
        config, networks, tokenizer_folder = _load_checkpoint(config_name, options)
    else:
        if config_name is None:
            raise InputError("no --config given", fix=f"pass --config with one of {', '.join(config_names())}")
        config = get_config(config_name)
        networks = _networks(config, Weights(options))
        tokenizer_folder = None
    tokenizer_folder = options.tokenizer or tokenizer_folder
    dtype = float_dtype_name(precision)
    f = config.vae.downsample_factor
    m = 2 ** (len(config.unet.block_out_channels) - 1)
    tokens = config.text_encoder.max_position_embeddings
    width = config.text_encoder.hidden_size
    latent_channels = config.vae.latent_channels

    batch = options.batch_range()
    guided = Range(batch.min, 2 * batch.opt, 2 * batch.max)  # [uncond; cond] rows of classifier-free guidance
    pixels = options.resolution_range(config.image_size, f * m)
    fix = f"choose a --resolution divisible by {f * m} (the VAE down-samples by {f}, the U-Net by {m})"
    latent = pixels.symbol(m, f, what="resolution", fix=fix)
    image = pixels.symbol(f * m, what="resolution", fix=fix)
    guided_b = guided.symbol()
    user_b = batch.symbol()

    specs = [
        ComponentSpec(
            name="text_encoder",
            module=lambda: TextEncoderComponent(networks["text_encoder"]()),
            inputs=(TensorSpec("input_ids", "int32", ("B", tokens), low=0, high=config.text_encoder.vocab_size),),
            outputs=(TensorSpec("text_embeddings", dtype, ("B", tokens, width)),),
            symbols={"B": guided_b},
        ),
        ComponentSpec(
            name="unet",
            module=lambda: UNetComponent(networks["unet"]()),
            inputs=(
                TensorSpec("sample", dtype, ("B", latent_channels, "h", "w")),
                TensorSpec("timestep", "float32", ("B",), low=0, high=1000, uniform=True),
                TensorSpec("encoder_hidden_states", dtype, ("B", tokens, config.unet.cross_attention_dim)),
            ),
            outputs=(TensorSpec("model_output", dtype, ("B", config.unet.out_channels, "h", "w")),),
            symbols={"B": guided_b, "h": latent, "w": latent},
        ),
        ComponentSpec(
            name="vae_decoder",
            module=lambda: VaeDecoderComponent(networks["vae"]()),
            inputs=(TensorSpec("latent", dtype, ("B", latent_channels, "h", "w")),),
            outputs=(TensorSpec("image", dtype, ("B", config.vae.out_channels, f"{f}h", f"{f}w")),),
            symbols={"B": user_b, "h": latent, "w": latent},
        ),
        ComponentSpec(
            name="vae_encoder",
            module=lambda: VaeEncoderComponent(networks["vae"]()),
            inputs=(TensorSpec("image", dtype, ("B", config.vae.in_channels, "H", "W"), low=-1, high=1, uniform=True),),
            outputs=(TensorSpec("latent_moments", dtype, ("B", 2 * latent_channels, f"H/{f}", f"W/{f}")),),
            symbols={"B": user_b, "H": image, "W": image},
        ),
    ]
    text = config.text_encoder
    tokenizer = tokenizer_source(tokenizer_folder, options.random_weights, StandinVocabulary(
        vocab_size=text.vocab_size, end_id=text.eos_token_id, pad_id=text.pad_token_id, start_id=text.bos_token_id))
    return FamilyExport(
        family=FAMILY,
        config=config.name,
        precision=precision,
        components={spec.name: spec for spec in specs},
        settings=ldm_settings(config),
        tokenizer=tokenizer,
        text_component="text_encoder",
        options=options.record(),
    )


__all__ = ["FAMILY", "config_names", "ldm_settings", "plan"]
