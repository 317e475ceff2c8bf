"""Timestep embeddings shared by every diffusion U-Net."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(
    timesteps: torch.Tensor,
    dim: int,
    *,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Transformer-style sinusoidal features of (possibly fractional) timesteps.

    timesteps: (B,) -> (B, dim), float32. Frequencies are ``max_period ** (-i / (half - freq_shift))``
    for ``i < half = dim // 2``; the first half is sin and the second cos (swapped with
    ``flip_sin_to_cos``, the layout of Stable Diffusion and DeepFloyd IF).
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(-math.log(max_period) * exponent / (half - freq_shift))
    angles = timesteps.float()[:, None] * frequencies[None, :]  # (B, half)
    sin, cos = torch.sin(angles), torch.cos(angles)
    embedding = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class TimestepEmbedding(nn.Module):
    """MLP on sinusoidal features: (B, in_dim) -> (B, out_dim). ``act``: ``"silu"`` or ``"gelu"`` (IF)."""

    def __init__(self, in_dim: int, out_dim: int, act: str = "silu"):
        super().__init__()
        if act not in ("silu", "gelu"):
            raise ValueError(f"act must be 'silu' or 'gelu', got {act!r}")
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.SiLU() if act == "silu" else nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))
