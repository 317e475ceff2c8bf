"""genrt.sdk.ldm: latent diffusion (Stable Diffusion 1.x / 2.x): configs, U-Net, KL autoencoder, CLIP text
encoder and checkpoint loading (diffusers folders and original single files). Training
(``genrt.sdk.ldm.training``) and the torch reference pipeline (``genrt.sdk.ldm.pipeline``) build on
``genrt.sdk.diffusion`` and are imported from their modules."""

from genrt.sdk.ldm.autoencoder import AutoencoderKL, DiagonalGaussian
from genrt.sdk.ldm.checkpoint import from_pretrained, load_original, save_original, save_pretrained
from genrt.sdk.ldm.config import (
    AutoencoderKLConfig,
    LDMConfig,
    TextEncoderConfig,
    UNetConfig,
    config_names,
    get_config,
)
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.text_encoder import CLIPTextEncoder
from genrt.sdk.ldm.unet import UNet2DCondition

__all__ = [
    "AutoencoderKL",
    "AutoencoderKLConfig",
    "CLIPTextEncoder",
    "DiagonalGaussian",
    "LDMConfig",
    "LatentDiffusion",
    "TextEncoderConfig",
    "UNet2DCondition",
    "UNetConfig",
    "config_names",
    "from_pretrained",
    "get_config",
    "load_original",
    "save_original",
    "save_pretrained",
]
