"""Imagen text-conditioned U-Net: the 64x64 base model and the Efficient U-Net super-resolution stages.

Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding":

- the frozen T5 embeddings are projected to ``cond_dim``; their masked mean, through an MLP, is added
  to the time embedding (the pooled text embedding), and the tokens feed attention blocks as keys and
  values (cross-attention), concatenated with the image tokens where ``self_attention`` is set;
- super-resolution stages concatenate the (already upsampled) low-res image to the input and embed the
  augmentation noise level like a timestep, added to the time embedding;
- the Efficient U-Net (App. B) downsamples *before* the residual blocks in the down path (so no block
  runs at full resolution) and upsamples *after* them in the up path, puts more blocks at lower
  resolutions (``num_res_blocks``) and scales skip connections by 1/sqrt(2).

Padding tokens never change the output: every use of the text honours ``text_mask``. A learned null
key/value pair is always attendable, so an all-padding (unconditional) prompt is well defined.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.imagen.config import ImagenUNetConfig
from genrt.sdk.nn import Downsample, ResnetBlock, TimestepEmbedding, Upsample, multi_head_attention, sinusoidal_embedding


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens: (B, T, D), mask: (B, T) bool -> (B, D); all-padding rows give zeros."""
    weights = mask.to(tokens.dtype)[..., None]  # (B, T, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TextConditioner(nn.Module):
    """T5 embeddings -> attention tokens (B, T, cond_dim) and a pooled time-embedding term (B, time_dim)."""

    def __init__(self, text_dim: int, cond_dim: int, time_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, cond_dim)
        self.norm = nn.LayerNorm(cond_dim)
        self.to_time = nn.Sequential(
            nn.LayerNorm(cond_dim), nn.Linear(cond_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm(self.proj(text))  # (B, T, cond_dim)
        return tokens, self.to_time(masked_mean(tokens, mask))


class ImageTextAttention(nn.Module):
    """Attention of the pixels over [null; text tokens; pixels] (text and pixels as configured), residual.

    x: (B, C, H, W), text: (B, T, cond_dim), text_mask: (B, T) bool -> (B, C, H, W).
    """

    def __init__(self, channels: int, cond_dim: int | None, *, heads: int, head_dim: int, self_attention: bool,
                 groups: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=1e-5)
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(channels, inner, bias=False) if self_attention else None
        self.to_v = nn.Linear(channels, inner, bias=False) if self_attention else None
        self.add_k_proj = nn.Linear(cond_dim, inner, bias=False) if cond_dim else None
        self.add_v_proj = nn.Linear(cond_dim, inner, bias=False) if cond_dim else None
        self.null_kv = nn.Parameter(torch.randn(2, inner) * 0.02)  # learned key, value: always attendable
        self.to_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        null_k, null_v = (p.to(h.dtype)[None, None, :].expand(batch, 1, -1) for p in self.null_kv)
        keys, values = [null_k], [null_v]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=x.device)]
        if self.add_k_proj is not None:
            keys.append(self.add_k_proj(text))
            values.append(self.add_v_proj(text))
            masks.append(text_mask)
        if self.to_k is not None:
            keys.append(self.to_k(h))
            values.append(self.to_v(h))
            masks.append(torch.ones(batch, h.shape[1], dtype=torch.bool, device=x.device))
        out = multi_head_attention(
            self.to_q(h), torch.cat(keys, 1), torch.cat(values, 1), self.heads, torch.cat(masks, 1)
        )  # (B, H*W, inner)
        out = self.to_out(out).transpose(1, 2).reshape(batch, channels, height, width)
        return x + out


class DownLevel(nn.Module):
    """Residual blocks (+ attention) at one resolution; returns (x for the next level, skip).

    ``efficient``: downsample (in_ch -> width) first, then the blocks; else blocks, then a downsample
    of the output (``downsample_after``). The skip is the output of the blocks.
    """

    def __init__(self, blocks: list[ResnetBlock], attention: ImageTextAttention | None,
                 downsample: Downsample | None, efficient: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.downsample = downsample
        self.efficient = efficient

    def forward(self, x, temb, text, text_mask):
        if self.efficient and self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = block(x, temb)
        if self.attention is not None:
            x = self.attention(x, text, text_mask)
        skip = x
        if not self.efficient and self.downsample is not None:
            x = self.downsample(x)
        return x, skip


class UpLevel(nn.Module):
    """Concatenate the scaled skip, residual blocks (+ attention), then upsample (if any)."""

    def __init__(self, blocks: list[ResnetBlock], attention: ImageTextAttention | None,
                 upsample: Upsample | None, skip_scale: float):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.upsample = upsample
        self.skip_scale = skip_scale

    def forward(self, x, skip, temb, text, text_mask):
        x = torch.cat([x, skip * self.skip_scale], dim=1)
        for block in self.blocks:
            x = block(x, temb)
        if self.attention is not None:
            x = self.attention(x, text, text_mask)
        return x if self.upsample is None else self.upsample(x)


class ImagenUNet(nn.Module):
    """Imagen U-Net.

    sample: (B, 3, H, W), timestep: (B,) float, text_embeddings: (B, T, text_dim), text_mask: (B, T)
    (nonzero = real token), and for super-resolution stages low_res: (B, 3, H, W) (already upsampled)
    and noise_level: (B,) int -> model_output (B, out_channels, H, W). H, W: multiples of ``config.stride``.
    """

    def __init__(self, config: ImagenUNetConfig):
        super().__init__()
        self.config = c = config
        widths = c.widths
        levels = len(widths)
        self.time_embedding = TimestepEmbedding(c.channels, c.time_dim)
        self.noise_level_embedding = TimestepEmbedding(c.channels, c.time_dim) if c.low_res_cond else None
        self.text = TextConditioner(c.text_dim, c.cond_dim, c.time_dim)
        self.conv_in = nn.Conv2d(c.in_channels * (2 if c.low_res_cond else 1), c.channels, 3, padding=1)

        self.down = nn.ModuleList()
        channels = c.channels
        for i, width in enumerate(widths):
            if c.efficient:
                downsample, first_in = Downsample(channels, width), width
            else:
                downsample, first_in = (Downsample(width) if i < levels - 1 else None), channels
            blocks = [self._block(first_in if j == 0 else width, width) for j in range(c.num_res_blocks[i])]
            self.down.append(DownLevel(blocks, self._attention(i, width), downsample, c.efficient))
            channels = width

        self.mid_block_1 = self._block(channels, channels)
        self.mid_attention = ImageTextAttention(
            channels, c.cond_dim, heads=c.heads, head_dim=c.head_dim, self_attention=c.self_attention, groups=c.groups
        )
        self.mid_block_2 = self._block(channels, channels)

        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            width = widths[i]
            blocks = [self._block(channels + width if j == 0 else width, width) for j in range(c.num_res_blocks[i])]
            upsample = Upsample(width) if (c.efficient or i > 0) else None
            self.up.append(UpLevel(blocks, self._attention(i, width), upsample, c.skip_scale))
            channels = width

        self.norm_out = nn.GroupNorm(c.groups, channels, eps=1e-5)
        self.conv_out = nn.Conv2d(channels, c.out_channels, 3, padding=1)

    def _block(self, in_channels: int, out_channels: int) -> ResnetBlock:
        c = self.config
        return ResnetBlock(
            in_channels, out_channels, temb_channels=c.time_dim, groups=c.groups, eps=1e-5, dropout=c.dropout,
            time_embedding_norm="scale_shift" if c.scale_shift else "default", output_scale_factor=1.0 / c.skip_scale,
        )

    def _attention(self, level: int, channels: int) -> ImageTextAttention | None:
        c = self.config
        if level not in c.attention_levels:
            return None
        return ImageTextAttention(
            channels, c.cond_dim if level in c.cross_attention_levels else None, heads=c.heads,
            head_dim=c.head_dim, self_attention=c.self_attention, groups=c.groups,
        )

    def _check(self, sample, timestep, text_embeddings, text_mask, low_res, noise_level) -> None:
        c = self.config
        if sample.ndim != 4 or sample.shape[1] != c.in_channels:
            raise InputError(f"`sample` | received {tuple(sample.shape)} | expected (B, {c.in_channels}, H, W)")
        batch, _, height, width = sample.shape
        if height % c.stride or width % c.stride:
            raise InputError(
                f"`sample` | received {tuple(sample.shape)} | expected H, W multiples of {c.stride}",
                fix=f"resize the image to a multiple of {c.stride}",
            )
        if timestep.shape != (batch,):
            raise InputError(f"`timestep` | received {tuple(timestep.shape)} | expected ({batch},)")
        if text_embeddings.ndim != 3 or text_embeddings.shape[0] != batch or text_embeddings.shape[2] != c.text_dim:
            raise InputError(
                f"`text_embeddings` | received {tuple(text_embeddings.shape)} | expected ({batch}, T, {c.text_dim})"
            )
        if text_mask.shape != text_embeddings.shape[:2]:
            raise InputError(
                f"`text_mask` | received {tuple(text_mask.shape)} | expected {tuple(text_embeddings.shape[:2])}"
            )
        if c.low_res_cond:
            if low_res is None or noise_level is None:
                raise InputError("super-resolution U-Net called without `low_res` and `noise_level`",
                                 fix="pass the upsampled low-res image and its augmentation level")
            if low_res.shape != sample.shape:
                raise InputError(f"`low_res` | received {tuple(low_res.shape)} | expected {tuple(sample.shape)}",
                                 fix="upsample the low-res image to the sample size first")
            if noise_level.shape != (batch,):
                raise InputError(f"`noise_level` | received {tuple(noise_level.shape)} | expected ({batch},)")
        elif low_res is not None or noise_level is not None:
            raise InputError("base U-Net called with `low_res`/`noise_level`", fix="pass them to SR stages only")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: torch.Tensor,
        text_mask: torch.Tensor,
        low_res: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(sample, timestep, text_embeddings, text_mask, low_res, noise_level)
        c = self.config
        mask = text_mask.bool()
        # 1. Conditioning vector: time + pooled text (+ augmentation level for SR stages).
        temb = self.time_embedding(sinusoidal_embedding(timestep, c.channels).to(sample.dtype))
        tokens, pooled = self.text(text_embeddings, mask)
        temb = temb + pooled
        x = sample
        if c.low_res_cond:
            temb = temb + self.noise_level_embedding(sinusoidal_embedding(noise_level, c.channels).to(sample.dtype))
            x = torch.cat([sample, low_res], dim=1)  # (B, 6, H, W)
        # 2. Down path, keeping one skip per level.
        h = self.conv_in(x)
        skips = []
        for level in self.down:
            h, skip = level(h, temb, tokens, mask)
            skips.append(skip)
        # 3. Middle.
        h = self.mid_block_2(self.mid_attention(self.mid_block_1(h, temb), tokens, mask), temb)
        # 4. Up path, deepest level first.
        for level in self.up:
            h = level(h, skips.pop(), temb, tokens, mask)
        return self.conv_out(F.silu(self.norm_out(h)))
