"""The text-conditioned U-Net of Stable Diffusion 1.x / 2.x.

Module names follow diffusers' ``UNet2DConditionModel`` (``conv_in``, ``time_embedding``,
``down_blocks.i.{resnets,attentions,downsamplers}``, ``mid_block``, ``up_blocks``,
``conv_norm_out``, ``conv_out``) so that diffusers weights load without renames.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.ldm.config import UNetConfig
from genrt.sdk.ldm.transformer import Transformer2D
from genrt.sdk.nn import Downsample, ResnetBlock, TimestepEmbedding, Upsample, sinusoidal_embedding


def _resnet(config: UNetConfig, in_channels: int, out_channels: int) -> ResnetBlock:
    return ResnetBlock(
        in_channels,
        out_channels,
        temb_channels=config.time_embed_dim,
        groups=config.norm_num_groups,
        eps=config.norm_eps,
    )


def _transformer(config: UNetConfig, channels: int, heads: int) -> Transformer2D:
    return Transformer2D(
        channels,
        heads,
        config.cross_attention_dim,
        num_layers=config.transformer_layers,
        groups=config.norm_num_groups,
        linear_projection=config.use_linear_projection,
        upcast_attention=config.upcast_attention,
    )


class DownBlock(nn.Module):
    """``layers`` resnets (each followed by a transformer if ``attention``), then an optional stride-2 conv.

    x: (B, C_in, H, W) -> (B, C_out, H/2, W/2) or (B, C_out, H, W), plus every intermediate
    output for the skip connections.
    """

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int, heads: int,
                 attention: bool, downsample: bool):
        super().__init__()
        layers = config.layers_per_block
        self.resnets = nn.ModuleList(
            [_resnet(config, in_channels if i == 0 else out_channels, out_channels) for i in range(layers)]
        )
        self.attentions = nn.ModuleList(
            [_transformer(config, out_channels, heads) for _ in range(layers)] if attention else []
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, list]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[i](x, context)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet -> transformer -> resnet at the lowest resolution: (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        channels = config.block_out_channels[-1]
        self.resnets = nn.ModuleList([_resnet(config, channels, channels), _resnet(config, channels, channels)])
        self.attentions = nn.ModuleList([_transformer(config, channels, config.attention_heads[-1])])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class UpBlock(nn.Module):
    """``layers + 1`` resnets over [x, skip] concatenations (each followed by a transformer if
    ``attention``), then an optional nearest-x2 upsample and conv.

    x: (B, C_prev, H, W) and skips -> (B, C_out, 2H, 2W) or (B, C_out, H, W).
    """

    def __init__(self, config: UNetConfig, prev_channels: int, out_channels: int, skip_in_channels: int,
                 heads: int, attention: bool, upsample: bool):
        super().__init__()
        layers = config.layers_per_block + 1
        resnets = []
        for i in range(layers):
            # The last resnet of a level consumes the skip from the level above (or conv_in).
            skip_channels = skip_in_channels if i == layers - 1 else out_channels
            resnet_in = prev_channels if i == 0 else out_channels
            resnets.append(_resnet(config, resnet_in + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            [_transformer(config, out_channels, heads) for _ in range(layers)] if attention else []
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, x: torch.Tensor, skips: list, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[i](x, context)
        for upsampler in self.upsamplers:
            x = upsampler(x)
        return x


class UNet2DCondition(nn.Module):
    """Predicts the noise (or v) of a noisy latent, conditioned on the timestep and text embeddings.

    sample: (B, 4, h, w) with h, w multiples of 2**(levels-1); timestep: (B,) or scalar, float
    or int; encoder_hidden_states: (B, 77, cross_attention_dim) -> (B, 4, h, w).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        channels = config.block_out_channels
        levels = len(channels)
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], config.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        for i in range(levels):
            self.down_blocks.append(
                DownBlock(config, channels[max(i - 1, 0)], channels[i], config.attention_heads[i],
                          config.attention_levels[i], downsample=i < levels - 1)
            )
        self.mid_block = MidBlock(config)

        self.up_blocks = nn.ModuleList()
        prev = channels[-1]
        for i in range(levels):
            level = levels - 1 - i  # the down level this up block mirrors
            self.up_blocks.append(
                UpBlock(config, prev, channels[level], channels[max(level - 1, 0)], config.attention_heads[level],
                        config.attention_levels[level], upsample=i < levels - 1)
            )
            prev = channels[level]
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    def check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        multiple = 2 ** (len(self.config.block_out_channels) - 1)
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels or sample.shape[2] % multiple \
                or sample.shape[3] % multiple:
            raise InputError(
                f"`sample` | received {tuple(sample.shape)} | expected (B, {self.config.in_channels}, h, w) "
                f"with h, w multiples of {multiple}",
                fix="pass latents of a supported size (image size / 8, a multiple of 8 pixels per level)",
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != self.config.cross_attention_dim \
                or encoder_hidden_states.shape[0] != sample.shape[0]:
            raise InputError(
                f"`encoder_hidden_states` | received {tuple(encoder_hidden_states.shape)} | expected "
                f"({sample.shape[0]}, T, {self.config.cross_attention_dim})",
                fix="encode the prompts with the text encoder that belongs to this U-Net",
            )

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        self.check_inputs(sample, encoder_hidden_states)
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(-1).expand(sample.shape[0])  # (B,)
        features = sinusoidal_embedding(timestep, self.config.block_out_channels[0],
                                        flip_sin_to_cos=self.config.flip_sin_to_cos,
                                        freq_shift=self.config.freq_shift)
        temb = self.time_embedding(features.to(sample.dtype))  # (B, 4*C0)

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, encoder_hidden_states)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, temb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
