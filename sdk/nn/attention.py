"""Multi-head attention on ``scaled_dot_product_attention``: self, cross, and spatial.

Parameter names follow the diffusers layout (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) so that
diffusers checkpoints map onto these modules with few renames.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """allowed (any shape) bool, True = attend -> the same shape in ``dtype``: 0 where attended, the most
    negative finite value elsewhere; SDPA's ``attn_mask`` for callers that never mask a whole row.

    An additive finite mask rather than SDPA's boolean one: the ONNX exporter turns a boolean mask into
    ``Where(mask, 0, -inf)`` plus an ``IsNaN``/``Where`` guard over the whole attention-probability tensor
    (for fully masked rows), which cost ONNX Runtime 42% of the Imagen base U-Net. With at least one key per
    row, exp(finite min - row max) is exactly 0, so the result equals the boolean mask's.
    """
    return (~allowed.to(torch.bool)).to(dtype) * torch.finfo(dtype).min


def additive_key_mask(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """key_mask (B, M) bool, True = attend -> (B, 1, 1, M) in ``dtype`` (:func:`additive_mask`). Every caller
    keeps at least one key per row (a null token or the image tokens)."""
    return additive_mask(key_mask, dtype)[:, None, None, :]


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q: (B, N, heads*d), k/v: (B, M, heads*d), key_mask: (B, M) bool, True = attend -> (B, N, heads*d)."""
    batch, n, inner = q.shape
    d = inner // heads
    q = q.reshape(batch, -1, heads, d).transpose(1, 2)  # (B, heads, N, d)
    k = k.reshape(batch, -1, heads, d).transpose(1, 2)  # (B, heads, M, d)
    v = v.reshape(batch, -1, heads, d).transpose(1, 2)  # (B, heads, M, d)
    if key_mask is None:
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
    elif torch.onnx.is_in_onnx_export():
        out = mask_in_keys_attention(q, k, v, key_mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_key_mask(key_mask, q.dtype))
    return out.transpose(1, 2).reshape(batch, -1, inner)


# The key column of a masked key in :func:`mask_in_keys_attention`: the logit it adds is this times 1/sqrt(d)
# (-7500 at d = 16, -2650 at d = 128: exp of it is 0 in float32 and float16), and it fits float16.
MASKED_KEY_COLUMN = -30000.0


def mask_in_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """q (B, heads, N, d), k/v (B, heads, M, d), key_mask (B, M) bool -> (B, heads, N, d): SDPA with the key
    mask carried by one more channel of q (ones) and k (0 where attended, MASKED_KEY_COLUMN elsewhere), so that
    Q.K^T itself holds the mask. The graph the exporter makes this way has no Add over the whole (B, heads, N, M)
    score tensor (13% of ONNX Runtime's time on the Imagen base U-Net, which ran 1.11x faster without it); eager
    PyTorch keeps the additive mask, whose fused SDPA kernel the extra channel would leave (2x slower)."""
    heads, d = q.shape[1], q.shape[-1]
    column = (~key_mask.to(torch.bool)).to(q.dtype) * MASKED_KEY_COLUMN  # (B, M)
    q = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)  # (B, heads, N, d+1)
    k = torch.cat([k, column[:, None, :, None].expand(-1, heads, -1, 1)], dim=-1)  # (B, heads, M, d+1)
    return F.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)


class UpcastAttention(nn.Module):
    """:func:`multi_head_attention` with Q.K^T, the softmax and the weighted sum in float32, whatever the
    dtype of q/k/v (diffusers' ``upcast_attention``: SD 2.x logits pass float16's 65504).

    q: (B, N, heads*d), k/v: (B, M, heads*d) -> (B, N, heads*d) in q's dtype. Export lists it among the
    float32 islands ("attention_upcast").
    """

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = multi_head_attention(q.float(), k.float(), v.float(), self.heads, key_mask)
        return out.to(q.dtype)


class Attention(nn.Module):
    """Self-attention (``context=None``) or cross-attention over ``context``.

    x: (B, N, query_dim), context: (B, M, context_dim), key_mask: (B, M) bool -> (B, N, query_dim).
    Any N and M: nothing depends on the sequence length at construction time. ``upcast``: the
    attention itself runs in float32 (:class:`UpcastAttention`) in a half-precision model.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        *,
        heads: int = 8,
        dim_head: int = 64,
        qkv_bias: bool = False,
        out_bias: bool = True,
        dropout: float = 0.0,
        upcast: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])
        self.upcast = UpcastAttention(heads) if upcast else None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        if self.upcast is not None:
            out = self.upcast(q, k, v, key_mask)
        else:
            out = multi_head_attention(q, k, v, self.heads, key_mask)
        return self.to_out[1](self.to_out[0](out))


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual connection.

    x: (B, C, H, W) -> (B, C, H, W). The mid-block attention of the VQGAN and KL autoencoders.
    """

    def __init__(self, channels: int, *, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        h = multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), heads=1)
        h = self.to_out[0](h).transpose(1, 2).reshape(batch, channels, height, width)
        return x + h
