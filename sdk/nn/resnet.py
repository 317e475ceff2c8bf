"""Residual block with GroupNorm, optionally conditioned on a time embedding."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Nonlinearities by config name (GELU is the exact erf form, as in DeepFloyd IF).
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu}


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a (1x1-projected) skip connection.

    x: (B, C_in, H, W), temb: (B, temb_channels) or None -> (B, C_out, H, W).

    ``time_embedding_norm="default"`` adds the projected embedding after the first conv;
    ``"scale_shift"`` (Imagen / DeepFloyd IF) modulates the second norm as ``norm(h) * (1 + s) + b``.
    The sum is divided by ``output_scale_factor`` (sqrt(2) in the Imagen super-resolution U-Nets).
    ``act`` is the nonlinearity (``"silu"``, or ``"gelu"`` in DeepFloyd IF). ``resample="down"``/``"up"``
    halves/doubles H, W inside the block (2x2 average pool / nearest neighbour, applied to both paths
    after the first norm): the BigGAN-style resampling blocks of IF, output (B, C_out, H/2 or 2H, ...).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        temb_channels: int | None = None,
        groups: int = 32,
        eps: float = 1e-6,
        dropout: float = 0.0,
        time_embedding_norm: str = "default",
        skip_time_act: bool = False,
        output_scale_factor: float = 1.0,
        act: str = "silu",
        resample: str | None = None,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        if time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"time_embedding_norm must be 'default' or 'scale_shift', got {time_embedding_norm!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.act = ACTIVATIONS[act]
        self.resample = resample
        self.time_embedding_norm = time_embedding_norm
        self.skip_time_act = skip_time_act
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if temb_channels is not None:
            projected = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
            self.time_emb_proj = nn.Linear(temb_channels, projected)
        else:
            self.time_emb_proj = None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.norm1(x))
        if self.resample is not None:
            x, h = self._resample(x), self._resample(h)
        h = self.conv1(h)
        if self.time_emb_proj is not None and temb is not None:
            t = temb if self.skip_time_act else self.act(temb)
            t = self.time_emb_proj(t)[:, :, None, None]  # (B, C or 2C, 1, 1)
            if self.time_embedding_norm == "scale_shift":
                scale, shift = t.chunk(2, dim=1)
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(h + t)
        else:
            h = self.norm2(h)
        h = self.conv2(self.dropout(self.act(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor
