"""The spatial transformer of the Stable Diffusion U-Net: self-attention, cross-attention, GEGLU.

Parameter names follow the diffusers ``Transformer2DModel`` / ``BasicTransformerBlock`` layout,
which is also the layout of the original ``SpatialTransformer`` inside ``model.diffusion_model``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.sdk.nn import Attention


class GEGLU(nn.Module):
    """(B, N, dim) -> (B, N, inner): one projection to 2*inner, split into value and gelu(gate)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """(B, N, dim) -> (B, N, dim): GEGLU to 4*dim, dropout, linear back (``net.0``, ``net.1``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = mult * dim
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention over the text, and feed-forward, each residual.

    x: (B, N, dim), context: (B, M, context_dim) -> (B, N, dim). ``upcast_attention``: both attentions
    compute in float32 (see :class:`genrt.sdk.nn.attention.UpcastAttention`).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, upcast_attention: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head, upcast=upcast_attention)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads=heads, dim_head=dim_head, upcast=upcast_attention)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """GroupNorm, project the pixels to tokens, transformer blocks, project back, add the input.

    x: (B, C, H, W), context: (B, M, context_dim) -> (B, C, H, W). ``linear_projection`` uses
    Linear layers on the tokens (SD 2.x) instead of 1x1 convolutions on the map (SD 1.x); the two
    compute the same function but store weights of different shapes.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        context_dim: int,
        *,
        num_layers: int = 1,
        groups: int = 32,
        linear_projection: bool = False,
        upcast_attention: bool = False,
    ):
        super().__init__()
        dim_head = channels // heads
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        if linear_projection:
            self.proj_in = nn.Linear(channels, channels)
            self.proj_out = nn.Linear(channels, channels)
        else:
            self.proj_in = nn.Conv2d(channels, channels, 1)
            self.proj_out = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, dim_head, context_dim, upcast_attention) for _ in range(num_layers)]
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        if not self.linear_projection:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # (B, H*W, C)
        if self.linear_projection:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear_projection:
            h = self.proj_out(h)
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)  # (B, C, H, W)
        if not self.linear_projection:
            h = self.proj_out(h.contiguous())
        return x + h
