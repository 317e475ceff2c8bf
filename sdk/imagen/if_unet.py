"""DeepFloyd IF U-Nets (stage I 64x64, stage II 256x256) in the diffusers ``UNet2DConditionModel`` layout.

Module names follow diffusers (``down_blocks.1.attentions.0.add_k_proj``, ``add_embedding.pool``,
``class_embedding``...) so a diffusers checkpoint loads with ``genrt.sdk.imagen.checkpoint``. IF's
specifics: GELU everywhere, scale-shift residual blocks that also do the resampling (avg-pool /
nearest), attention over [text; pixels] with added K/V projections and a GroupNorm on the text
tokens, T5 embeddings projected by ``encoder_hid_proj``, attention-pooled text added to the time
embedding, and for stage II the augmentation noise level embedded like a timestep.

Without ``text_mask`` the computation is exactly diffusers'. With it, padding tokens are excluded
everywhere the text is used (attention keys, the text GroupNorm statistics, the attention pooling),
so padding the prompt does not change the output.
"""

from __future__ import annotations

import torch
from torch import nn

from genrt.errors import InputError
from genrt.sdk.imagen.config import IFUNetConfig
from genrt.sdk.nn import ResnetBlock, TimestepEmbedding, multi_head_attention, sinusoidal_embedding
from genrt.sdk.nn.resnet import ACTIVATIONS

# GroupNorm groups of the text tokens in every attention block (diffusers' fixed default).
CROSS_NORM_GROUPS = 32


def masked_group_norm(x: torch.Tensor, mask: torch.Tensor | None, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of tokens over channels and valid positions only. x: (B, T, C), mask: (B, T) bool -> (B, T, C)."""
    if mask is None:
        return norm(x.transpose(1, 2)).transpose(1, 2)
    batch, length, channels = x.shape
    groups = norm.num_groups
    xg = x.reshape(batch, length, groups, channels // groups)  # (B, T, G, C/G)
    weight = mask.to(x.dtype)[:, :, None, None]  # (B, T, 1, 1)
    count = weight.sum(dim=1, keepdim=True).clamp(min=1.0) * (channels // groups)  # (B, 1, 1, 1)
    mean = (xg * weight).sum(dim=(1, 3), keepdim=True) / count  # (B, 1, G, 1)
    var = (((xg - mean) ** 2) * weight).sum(dim=(1, 3), keepdim=True) / count
    normed = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(batch, length, channels)
    return normed * norm.weight + norm.bias


class AttentionPooling(nn.Module):
    """IF's attention pooling: a query made of the (masked) token mean attends over [query; tokens].

    x: (B, T, D), mask: (B, T) bool or None -> (B, D).
    """

    def __init__(self, heads: int, dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(1, dim) / dim**0.5)
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        if mask is None:
            mean = x.mean(dim=1, keepdim=True)
        else:
            weights = mask.to(x.dtype)[..., None]
            mean = (x * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        query = mean + self.positional_embedding.to(x.dtype)  # (B, 1, D)
        tokens = torch.cat([query, x], dim=1)  # (B, 1+T, D)
        key_mask = None
        if mask is not None:
            key_mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=x.device), mask], dim=1)
        out = multi_head_attention(self.q_proj(query), self.k_proj(tokens), self.v_proj(tokens), self.heads, key_mask)
        return out[:, 0]


class TextTimeEmbedding(nn.Module):
    """LayerNorm -> attention pooling -> linear -> LayerNorm: (B, T, D_text) -> (B, time_dim)."""

    def __init__(self, text_dim: int, time_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(text_dim)
        self.pool = AttentionPooling(heads, text_dim)
        self.proj = nn.Linear(text_dim, time_dim)
        self.norm2 = nn.LayerNorm(time_dim)

    def forward(self, text: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.norm2(self.proj(self.pool(self.norm1(text), mask)))


class AddedKVAttention(nn.Module):
    """Pixels attend over [text; pixels]: GroupNorm on both, separate K/V projections for the text.

    x: (B, C, H, W), text: (B, T, cross_dim), text_mask: (B, T) bool or None -> (B, C, H, W) (residual).
    """

    def __init__(self, channels: int, cross_dim: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-5)
        # diffusers' SimpleCrossAttn blocks leave the text norm at its default of 32 groups, whatever
        # norm_num_groups is (Attention's cross_attention_norm_num_groups)
        self.norm_cross = nn.GroupNorm(CROSS_NORM_GROUPS, cross_dim, eps=1e-5)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.add_k_proj = nn.Linear(cross_dim, channels)
        self.add_v_proj = nn.Linear(cross_dim, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.group_norm(x.reshape(batch, channels, -1)).transpose(1, 2)  # (B, H*W, C)
        text = masked_group_norm(text, text_mask, self.norm_cross)
        key = torch.cat([self.add_k_proj(text), self.to_k(h)], dim=1)  # (B, T+H*W, C)
        value = torch.cat([self.add_v_proj(text), self.to_v(h)], dim=1)
        key_mask = None
        if text_mask is not None:
            pixels = torch.ones(batch, h.shape[1], dtype=torch.bool, device=x.device)
            key_mask = torch.cat([text_mask, pixels], dim=1)
        out = multi_head_attention(self.to_q(h), key, value, self.heads, key_mask)  # (B, H*W, C)
        out = self.to_out[1](self.to_out[0](out)).transpose(1, 2).reshape(batch, channels, height, width)
        return x + out


class IFDownBlock(nn.Module):
    """ResnetDownsampleBlock2D / SimpleCrossAttnDownBlock2D: returns (x, skips), one skip per block."""

    def __init__(self, resnets, attentions, downsampler):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if attentions else None
        self.downsamplers = nn.ModuleList([downsampler]) if downsampler is not None else None

    def forward(self, x, temb, text, text_mask):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, text, text_mask)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, temb)
            skips.append(x)
        return x, skips


class IFUpBlock(nn.Module):
    """ResnetUpsampleBlock2D / SimpleCrossAttnUpBlock2D: each block first concatenates the latest skip."""

    def __init__(self, resnets, attentions, upsampler):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if attentions else None
        self.upsamplers = nn.ModuleList([upsampler]) if upsampler is not None else None

    def forward(self, x, skips, temb, text, text_mask):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, text, text_mask)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, temb)
        return x


class IFMidBlock(nn.Module):
    """UNetMidBlock2DSimpleCrossAttn: resnet, attention, resnet."""

    def __init__(self, resnets, attention):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([attention])

    def forward(self, x, temb, text, text_mask):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, text, text_mask)
        return self.resnets[1](x, temb)


class IFUNet(nn.Module):
    """DeepFloyd IF U-Net.

    sample: (B, 3, H, W), timestep: (B,), text_embeddings: (B, T, encoder_hid_dim) (T5 output),
    text_mask: (B, T) or None; stage II also low_res: (B, 3, H, W) (upsampled, noised) and
    noise_level: (B,) -> model_output (B, 6, H, W) (epsilon and the variance interpolation).
    """

    def __init__(self, config: IFUNetConfig):
        super().__init__()
        self.config = c = config
        chans = c.block_out_channels
        levels = len(chans)
        self.conv_in = nn.Conv2d(c.in_channels, chans[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(chans[0], c.time_dim, act=c.act)
        self.encoder_hid_proj = nn.Linear(c.encoder_hid_dim, c.cross_attention_dim)
        self.class_embedding = TimestepEmbedding(chans[0], c.time_dim, act=c.act) if c.noise_level_conditioning else None
        self.add_embedding = TextTimeEmbedding(c.encoder_hid_dim, c.time_dim, c.addition_embed_type_num_heads)

        self.down_blocks = nn.ModuleList()
        out_ch = chans[0]
        for i in range(levels):
            in_ch, out_ch = out_ch, chans[i]
            n = c.layers_per_block[i]
            resnets = [self._resnet(in_ch if j == 0 else out_ch, out_ch) for j in range(n)]
            attentions = [self._attention(out_ch) for _ in range(n)] if c.cross_attention[i] else None
            down = self._resnet(out_ch, out_ch, resample="down") if i < levels - 1 else None
            self.down_blocks.append(IFDownBlock(resnets, attentions, down))

        mid_scale = dict(output_scale_factor=c.mid_block_scale_factor)
        self.mid_block = IFMidBlock(
            [self._resnet(chans[-1], chans[-1], **mid_scale), self._resnet(chans[-1], chans[-1], **mid_scale)],
            self._attention(chans[-1]),
        )

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(chans))
        rev_layers = list(reversed(c.layers_per_block))
        rev_cross = list(reversed(c.cross_attention))
        out_ch = rev[0]
        for i in range(levels):
            prev_ch, out_ch = out_ch, rev[i]
            in_ch = rev[min(i + 1, levels - 1)]
            n = rev_layers[i] + 1
            resnets = [
                self._resnet((prev_ch if j == 0 else out_ch) + (in_ch if j == n - 1 else out_ch), out_ch)
                for j in range(n)
            ]
            attentions = [self._attention(out_ch) for _ in range(n)] if rev_cross[i] else None
            up = self._resnet(out_ch, out_ch, resample="up") if i < levels - 1 else None
            self.up_blocks.append(IFUpBlock(resnets, attentions, up))

        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, chans[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(chans[0], c.out_channels, 3, padding=1)

    def _resnet(self, in_ch: int, out_ch: int, *, resample: str | None = None,
                output_scale_factor: float | None = None) -> ResnetBlock:
        c = self.config
        return ResnetBlock(
            in_ch, out_ch, temb_channels=c.time_dim, groups=c.norm_num_groups, eps=c.norm_eps,
            time_embedding_norm="scale_shift", skip_time_act=c.resnet_skip_time_act, act=c.act, resample=resample,
            output_scale_factor=c.resnet_out_scale_factor if output_scale_factor is None else output_scale_factor,
        )

    def _attention(self, channels: int) -> AddedKVAttention:
        c = self.config
        return AddedKVAttention(channels, c.cross_attention_dim, c.attention_head_dim, c.norm_num_groups)

    def _check(self, sample, timestep, text_embeddings, text_mask, low_res, noise_level) -> None:
        c = self.config
        image_channels = c.in_channels // 2 if c.noise_level_conditioning else c.in_channels
        if sample.ndim != 4 or sample.shape[1] != image_channels:
            raise InputError(f"`sample` | received {tuple(sample.shape)} | expected (B, {image_channels}, H, W)")
        batch, _, height, width = sample.shape
        stride = 2 ** (len(c.block_out_channels) - 1)
        if height % stride or width % stride:
            raise InputError(f"`sample` | received {tuple(sample.shape)} | expected H, W multiples of {stride}")
        if timestep.shape != (batch,):
            raise InputError(f"`timestep` | received {tuple(timestep.shape)} | expected ({batch},)")
        if text_embeddings.ndim != 3 or text_embeddings.shape[::2] != (batch, c.encoder_hid_dim):
            raise InputError(
                f"`text_embeddings` | received {tuple(text_embeddings.shape)} | expected ({batch}, T, {c.encoder_hid_dim})"
            )
        if text_mask is not None and text_mask.shape != text_embeddings.shape[:2]:
            raise InputError(
                f"`text_mask` | received {tuple(text_mask.shape)} | expected {tuple(text_embeddings.shape[:2])}"
            )
        if c.noise_level_conditioning:
            if low_res is None or noise_level is None or low_res.shape != sample.shape or noise_level.shape != (batch,):
                raise InputError(
                    "stage II needs `low_res` of the sample's shape and `noise_level` of shape (B,)",
                    fix="pass the upsampled, noise-augmented low-res image and its noise level",
                )
        elif low_res is not None or noise_level is not None:
            raise InputError("stage I U-Net called with `low_res`/`noise_level`", fix="pass them to stage II only")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        low_res: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(sample, timestep, text_embeddings, text_mask, low_res, noise_level)
        c = self.config
        mask = None if text_mask is None else text_mask.bool()
        first = c.block_out_channels[0]
        # 1. Time embedding (+ noise level, stage II) + attention-pooled text.
        emb = self.time_embedding(sinusoidal_embedding(timestep, first).to(sample.dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(sinusoidal_embedding(noise_level, first).to(sample.dtype))
            sample = torch.cat([sample, low_res], dim=1)  # (B, 6, H, W)
        emb = emb + self.add_embedding(text_embeddings, mask)
        text = self.encoder_hid_proj(text_embeddings)  # (B, T, cross_attention_dim)
        # 2. Down path: every block output is a skip.
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, text, mask)
            skips.extend(block_skips)
        # 3. Middle, 4. up path consuming the skips in reverse.
        x = self.mid_block(x, emb, text, mask)
        for block in self.up_blocks:
            x = block(x, skips, emb, text, mask)
        return self.conv_out(ACTIVATIONS[c.act](self.conv_norm_out(x)))
