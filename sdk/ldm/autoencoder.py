"""The KL autoencoder (``AutoencoderKL``) of Stable Diffusion: images <-> 4-channel latents.

Module names follow diffusers (``encoder.down_blocks.i.resnets.j``, ``encoder.mid_block``,
``quant_conv``, ``post_quant_conv``, ``decoder.up_blocks``) so that diffusers weights load as is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.ldm.config import AutoencoderKLConfig
from genrt.sdk.nn import Downsample, ResnetBlock, SpatialSelfAttention, Upsample

# GroupNorm eps used everywhere in the autoencoder.
_EPS = 1e-6


class DiagonalGaussian:
    """The posterior q(z | x) = N(mean, exp(logvar)) given its moments.

    moments: (B, 2*C, h, w) = [mean, logvar] along channels; logvar is clamped to [-30, 20].
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, C, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """mean + std * noise, with ``noise`` (B, C, h, w) drawn by the caller."""
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample: (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class MidBlock(nn.Module):
    """resnet -> (single-head self-attention) -> resnet: (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(channels, groups=groups, eps=_EPS), ResnetBlock(channels, groups=groups, eps=_EPS)]
        )
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups=groups, eps=_EPS)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class EncoderBlock(nn.Module):
    """resnets, then an optional asymmetric-padding stride-2 conv: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups=groups, eps=_EPS)
             for i in range(layers)]
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels, asymmetric_padding=True)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x)
        return x


class DecoderBlock(nn.Module):
    """resnets, then an optional nearest-x2 upsample and conv: (B, C_in, h, w) -> (B, C_out, 2h, 2w)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups=groups, eps=_EPS)
             for i in range(layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x)
        return x


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, 2*latent_channels, H/f, W/f) moments (before ``quant_conv``)."""

    def __init__(self, config: AutoencoderKLConfig):
        super().__init__()
        channels = config.block_out_channels
        groups = config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [EncoderBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block, groups,
                          downsample=i < len(channels) - 1) for i in range(len(channels))]
        )
        self.mid_block = MidBlock(channels[-1], groups, config.mid_block_attention)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=_EPS)
        self.conv_out = nn.Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """(B, latent_channels, h, w) (after ``post_quant_conv``) -> (B, 3, h*f, w*f)."""

    def __init__(self, config: AutoencoderKLConfig):
        super().__init__()
        channels = tuple(reversed(config.block_out_channels))
        groups = config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, channels[0], 3, padding=1)
        self.mid_block = MidBlock(channels[0], groups, config.mid_block_attention)
        self.up_blocks = nn.ModuleList(
            [DecoderBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block + 1, groups,
                          upsample=i < len(channels) - 1) for i in range(len(channels))]
        )
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=_EPS)
        self.conv_out = nn.Conv2d(channels[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """Encode images to a diagonal Gaussian over latents, decode latents to images.

    ``encode``: image (B, 3, H, W) in [-1, 1], H and W multiples of f -> moments (B, 2*C, H/f, W/f).
    ``decode``: z (B, C, h, w), unscaled (already divided by ``scaling_factor``) -> (B, 3, h*f, w*f).
    """

    def __init__(self, config: AutoencoderKLConfig):
        super().__init__()
        self.config = config
        self.scaling_factor = config.scaling_factor
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.decoder = Decoder(config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> moments (B, 2*C, H/f, W/f): mean and logvar along channels."""
        f = self.config.downsample_factor
        if image.ndim != 4 or image.shape[1] != self.config.in_channels or image.shape[2] % f or image.shape[3] % f:
            raise InputError(
                f"`image` | received {tuple(image.shape)} | expected (B, {self.config.in_channels}, H, W) "
                f"with H, W multiples of {f}",
                fix=f"resize or crop the image to a multiple of {f} pixels",
            )
        return self.quant_conv(self.encoder(image))

    def posterior(self, image: torch.Tensor) -> DiagonalGaussian:
        """The distribution q(z | image) (unscaled latents)."""
        return DiagonalGaussian(self.encode(image))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) unscaled latents -> (B, 3, h*f, w*f) images, nominally in [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise InputError(
                f"`latent` | received {tuple(z.shape)} | expected (B, {self.config.latent_channels}, h, w)",
                fix="pass latents produced by this autoencoder's encoder or by the U-Net",
            )
        return self.decoder(self.post_quant_conv(z))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct: decode a posterior sample (``noise`` given) or its mean -> (image, posterior)."""
        posterior = self.posterior(image)
        z = posterior.mode() if noise is None else posterior.sample(noise)
        return self.decode(z), posterior
