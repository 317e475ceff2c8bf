"""The taming-transformers VQGAN: convolutional encoder, vector quantiser, convolutional decoder.

Module names follow the taming layout (``down[i].block[j]``, ``mid.attn_1``, ``up[i].upsample``),
built from the shared blocks of :mod:`genrt.sdk.nn`; :mod:`genrt.sdk.vqgan.checkpoint` maps the
taming and diffusers checkpoints onto it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.nn import Downsample, ResnetBlock, SpatialSelfAttention, Upsample
from genrt.sdk.vqgan.config import VQGANConfig
from genrt.sdk.vqgan.quantizer import VectorQuantizer, exporting


class MidBlock(nn.Module):
    """ResnetBlock -> self-attention -> ResnetBlock at the lowest resolution: (B, C, h, w) -> same."""

    def __init__(self, channels: int, config: VQGANConfig):
        super().__init__()
        norm = dict(groups=config.norm_groups, eps=config.norm_eps)
        self.block_1 = ResnetBlock(channels, channels, dropout=config.dropout, **norm)
        self.attn_1 = SpatialSelfAttention(channels, **norm)
        self.block_2 = ResnetBlock(channels, channels, dropout=config.dropout, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: ``block[j]`` (ResnetBlocks), ``attn[j]`` after each block where the
    level has attention, then an optional ``downsample`` or ``upsample``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool,
                 config: VQGANConfig, resample: str | None):
        super().__init__()
        norm = dict(groups=config.norm_groups, eps=config.norm_eps)
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if j == 0 else out_channels, out_channels, dropout=config.dropout, **norm)
            for j in range(num_blocks)
        )
        self.attn = nn.ModuleList(SpatialSelfAttention(out_channels, **norm) for _ in range(num_blocks if attention else 0))
        self.downsample = Downsample(out_channels, asymmetric_padding=True) if resample == "down" else None
        self.upsample = Upsample(out_channels) if resample == "up" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    """image (B, in_channels, H, W) -> z (B, z_channels, H/f, W/f), f = 2^(len(ch_mult)-1)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        levels = len(config.ch_mult)
        channels = [config.ch * m for m in (1, *config.ch_mult)]  # channels[i] -> channels[i+1] at level i
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        self.down = nn.ModuleList()
        resolution = config.resolution
        for i in range(levels):
            self.down.append(Level(channels[i], channels[i + 1], config.num_res_blocks,
                                   resolution in config.attn_resolutions, config,
                                   "down" if i != levels - 1 else None))
            resolution = resolution if i == levels - 1 else resolution // 2
        self.mid = MidBlock(channels[-1], config)
        self.norm_out = nn.GroupNorm(config.norm_groups, channels[-1], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(channels[-1], config.z_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z (B, z_channels, h, w) -> image (B, out_channels, h*f, w*f).

    ``up[i]`` is the level of resolution index i, applied from the last (lowest resolution) to
    ``up[0]``, each with ``num_res_blocks + 1`` ResnetBlocks, as in taming.
    """

    def __init__(self, config: VQGANConfig):
        super().__init__()
        levels = len(config.ch_mult)
        channels = [config.ch * m for m in config.ch_mult]
        self.conv_in = nn.Conv2d(config.z_channels, channels[-1], 3, padding=1)
        self.mid = MidBlock(channels[-1], config)
        resolution = config.resolution // config.downsample_factor
        up = []
        for i in reversed(range(levels)):
            in_channels = channels[min(i + 1, levels - 1)]
            up.append(Level(in_channels, channels[i], config.num_res_blocks + 1,
                            resolution in config.attn_resolutions, config, "up" if i != 0 else None))
            resolution = resolution * 2 if i != 0 else resolution
        self.up = nn.ModuleList(reversed(up))
        self.norm_out = nn.GroupNorm(config.norm_groups, channels[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQModel(nn.Module):
    """Encoder -> quant_conv -> VectorQuantizer -> post_quant_conv -> Decoder.

    Images are (B, 3, H, W) in [-1, 1] with H, W multiples of f; codes are (B, H/f, W/f) int64.
    """

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, beta=config.beta, ema=config.ema,
                                        decay=config.ema_decay, eps=config.ema_eps,
                                        l2_normalize=config.l2_normalize)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    def _check_image(self, image: torch.Tensor) -> None:
        f = self.config.downsample_factor
        if exporting():
            return
        if image.ndim != 4 or image.shape[1] != self.config.in_channels or image.shape[2] % f or image.shape[3] % f:
            raise InputError(
                f"image has shape {tuple(image.shape)}",
                fix=f"pass (B, {self.config.in_channels}, H, W) with H and W multiples of {f}",
            )
        if not image.dtype.is_floating_point:
            raise InputError(f"image has dtype {image.dtype}", fix="pass a float image scaled to [-1, 1]")

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image (B, 3, H, W) -> quant (B, embed_dim, H/f, W/f), codebook loss (scalar), indices (B, H/f, W/f)."""
        self._check_image(image)
        return self.quantize(self.quant_conv(self.encoder(image)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """quant (B, embed_dim, h, w) -> image (B, 3, h*f, w*f)."""
        if not exporting() and (quant.ndim != 4 or quant.shape[1] != self.config.embed_dim):
            raise InputError(f"quantised latent has shape {tuple(quant.shape)}",
                             fix=f"pass (B, {self.config.embed_dim}, h, w)")
        return self.decoder(self.post_quant_conv(quant))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) integer -> image (B, 3, h*f, w*f)."""
        return self.decode(self.quantize.lookup(indices))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, 3, H, W) -> reconstruction (B, 3, H, W), codebook loss (scalar)."""
        quant, loss, _ = self.encode(image)
        return self.decode(quant), loss

    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's output conv: the adaptive GAN weight compares gradients there."""
        return self.decoder.conv_out.weight
