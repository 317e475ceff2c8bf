"""A whole latent-diffusion model: U-Net, autoencoder, text encoder (and tokenizer) of one config."""

from __future__ import annotations

from torch import nn

from genrt.sdk.ldm.autoencoder import AutoencoderKL
from genrt.sdk.ldm.config import LDMConfig
from genrt.sdk.ldm.text_encoder import CLIPTextEncoder
from genrt.sdk.ldm.unet import UNet2DCondition


class LatentDiffusion(nn.Module):
    """The three networks of Stable Diffusion 1.x / 2.x, built (randomly initialised) from ``config``.

    ``tokenizer`` is a ``transformers.CLIPTokenizer`` or None (set when loaded from a folder that
    has one); it is not a module and holds no weights. Components passed in (already loaded) are
    used as they are instead of being built.
    """

    def __init__(self, config: LDMConfig, tokenizer=None, *, unet: UNet2DCondition | None = None,
                 vae: AutoencoderKL | None = None, text_encoder: CLIPTextEncoder | None = None):
        super().__init__()
        self.config = config
        self.unet = unet if unet is not None else UNet2DCondition(config.unet)
        self.vae = vae if vae is not None else AutoencoderKL(config.vae)
        self.text_encoder = text_encoder if text_encoder is not None else CLIPTextEncoder(config.text_encoder)
        self.tokenizer = tokenizer
