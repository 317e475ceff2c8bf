"""Vector quantisation: nearest codebook entry, straight-through gradient, codebook/commitment loss.

Options: an exponential-moving-average codebook (van den Oord et al. 2017, appendix) with Laplace
smoothing, and an l2-normalised (cosine) lookup (Yu et al. 2021, ViT-VQGAN).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError


def exporting() -> bool:
    """True while torch traces the module for export, where data-dependent checks cannot run."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class VectorQuantizer(nn.Module):
    """Maps each feature vector of z (B, C, H, W) to its nearest of ``n_embed`` codebook entries.

    ``embedding.weight`` (n_embed, C) is the codebook. With ``ema`` it is a buffer-like parameter
    (no gradient) recomputed from ``cluster_size`` (n_embed,) and ``embed_avg`` (n_embed, C) at every
    training-mode forward.
    """

    def __init__(self, n_embed: int, embed_dim: int, *, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, l2_normalize: bool = False):
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.l2_normalize = l2_normalize
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        if ema:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("cluster_size", torch.zeros(n_embed))
            self.register_buffer("embed_avg", self.embedding.weight.detach().clone())

    def codebook(self) -> torch.Tensor:
        """(n_embed, C): the entries distances are measured against (unit length with l2_normalize)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.l2_normalize else weight

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, C) -> (N,) int64 index of the nearest codebook entry (squared euclidean distance).

        d(z, e) = ||z||^2 - 2 z.e + ||e||^2, one matmul instead of an (N, n_embed, C) difference.
        """
        codebook = self.codebook()
        distance = (
            z.pow(2).sum(dim=1, keepdim=True)  # (N, 1)
            - 2.0 * z @ codebook.t()  # (N, n_embed)
            + codebook.pow(2).sum(dim=1)[None, :]  # (1, n_embed)
        )
        return distance.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z: (B, C, H, W) -> quantised (B, C, H, W), loss (scalar), indices (B, H, W) int64.

        loss = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2 (the first term is left to the EMA update
        when ``ema`` is set). The quantised output carries the straight-through gradient dL/dz.
        """
        if not exporting() and (z.ndim != 4 or z.shape[1] != self.embed_dim):
            raise InputError(f"quantiser input has shape {tuple(z.shape)}",
                             fix=f"pass (B, {self.embed_dim}, H, W) features")
        batch, channels, height, width = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, channels)  # (B*H*W, C)
        if self.l2_normalize:
            z_flat = F.normalize(z_flat, dim=1)
        indices = self.nearest(z_flat)  # (B*H*W,)
        quant_flat = F.embedding(indices, self.codebook())  # (B*H*W, C), the codebook before this step's update
        if self.ema and self.training:
            self._ema_update(z_flat.detach(), indices)

        commitment = F.mse_loss(z_flat, quant_flat.detach())
        if self.ema:
            loss = self.beta * commitment
        else:
            loss = F.mse_loss(quant_flat, z_flat.detach()) + self.beta * commitment
        quant_flat = z_flat + (quant_flat - z_flat).detach()  # straight-through estimator
        quant = quant_flat.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return quant.contiguous(), loss, indices.reshape(batch, height, width)

    @torch.no_grad()
    def _ema_update(self, z_flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step of the cluster sizes and code sums; codebook = smoothed average."""
        one_hot = F.one_hot(indices, self.n_embed).type_as(z_flat)  # (N, n_embed)
        self.cluster_size.mul_(self.decay).add_(one_hot.sum(0), alpha=1.0 - self.decay)
        self.embed_avg.mul_(self.decay).add_(one_hot.t() @ z_flat, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        # Laplace smoothing: no cluster size reaches zero, the total is preserved
        smoothed = (self.cluster_size + self.eps) / (total + self.n_embed * self.eps) * total
        self.embedding.weight.copy_(self.embed_avg / smoothed[:, None])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, h, w) integer -> codebook vectors (B, C, h, w)."""
        if not exporting():
            if indices.ndim != 3 or indices.dtype.is_floating_point:
                raise InputError(f"code indices have shape {tuple(indices.shape)} and dtype {indices.dtype}",
                                 fix="pass integer indices of shape (B, h, w)")
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.n_embed):
                raise InputError(
                    f"code indices span [{int(indices.min())}, {int(indices.max())}]",
                    fix=f"use indices in [0, {self.n_embed - 1}] of this {self.n_embed}-entry codebook",
                )
        quant = F.embedding(indices.long(), self.codebook())  # (B, h, w, C)
        return quant.permute(0, 3, 1, 2).contiguous()
