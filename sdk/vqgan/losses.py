"""The VQGAN training objective (taming ``VQLPIPSWithDiscriminator``, Esser et al. 2021, eq. 5-7).

Generator:      L = L_rec + lambda * f(step) * L_G + codebook_weight * L_VQ
                L_rec = mean(pixel_weight * |x - x^| + perceptual_weight * LPIPS(x, x^))
                L_G = -mean(D(x^))
                lambda = clamp(||grad_last L_rec|| / (||grad_last L_G|| + 1e-4), 0, 1e4) * disc_weight
Discriminator:  L_D = f(step) * d_loss(D(x), D(sg[x^]))  (hinge or vanilla)
with f(step) = disc_factor once step >= disc_start, else 0, and "last" the decoder's output conv; the LPIPS
term counts from ``perceptual_start`` on (0, as in taming).
"""

from __future__ import annotations

import torch
from torch import nn

from genrt.errors import InputError
from genrt.sdk.vqgan.config import VQGANLossConfig
from genrt.sdk.vqgan.discriminator import DISCRIMINATOR_LOSSES, NLayerDiscriminator
from genrt.sdk.vqgan.perceptual import LPIPS

ADAPTIVE_WEIGHT_EPS = 1e-4  # added to ||grad L_G|| in the adaptive weight's denominator
ADAPTIVE_WEIGHT_MAX = 1e4  # upper clamp of the adaptive weight


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||d rec_loss / d last_layer|| / (||d g_loss / d last_layer|| + 1e-4), clamped to [0, 1e4], detached."""
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + ADAPTIVE_WEIGHT_EPS)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


class VQGANLoss(nn.Module):
    """The generator and discriminator losses; owns the LPIPS network and the PatchGAN discriminator.

    Images are (B, 3, H, W) in [-1, 1], H and W >= 16 (LPIPS) when ``perceptual_weight`` > 0.
    Both methods return (loss scalar, logs: dict of detached scalars).
    """

    def __init__(self, config: VQGANLossConfig):
        super().__init__()
        self.config = config
        self.perceptual_loss = LPIPS() if config.perceptual_weight > 0 else None
        self.discriminator = NLayerDiscriminator(config.disc_in_channels, config.disc_ndf, config.disc_num_layers)
        self.d_loss = DISCRIMINATOR_LOSSES[config.disc_loss]

    def disc_factor(self, step: int) -> float:
        """f(step): disc_factor from ``disc_start`` on, 0 before."""
        return self.config.disc_factor if step >= self.config.disc_start else 0.0

    def reconstruction_loss(self, image: torch.Tensor, reconstruction: torch.Tensor, perceptual: bool = True
                            ) -> torch.Tensor:
        """pixel_weight * mean |x - x^| + perceptual_weight * mean LPIPS(x, x^) (LPIPS over the first
        ``perceptual_batch`` images; left out when not ``perceptual``)."""
        if image.shape != reconstruction.shape:
            raise InputError(f"image {tuple(image.shape)} and reconstruction {tuple(reconstruction.shape)} differ",
                             fix="pass the reconstruction of this very batch")
        rec = self.config.pixel_weight * (image - reconstruction).abs().mean()
        if self.perceptual_loss is not None and perceptual:
            n = self.config.perceptual_batch or image.shape[0]
            rec = rec + self.config.perceptual_weight * self.perceptual_loss(image[:n], reconstruction[:n]).mean()
        return rec

    def generator_loss(self, image: torch.Tensor, reconstruction: torch.Tensor, codebook_loss: torch.Tensor,
                       step: int, last_layer: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L for the autoencoder step; ``last_layer`` is ``VQModel.last_layer()`` (needs a graph to it)."""
        rec_loss = self.reconstruction_loss(image, reconstruction, step >= self.config.perceptual_start)
        loss = rec_loss + self.config.codebook_weight * codebook_loss.mean()
        logs = {"rec_loss": rec_loss.detach(), "codebook_loss": codebook_loss.detach().mean()}
        factor = self.disc_factor(step)
        if factor > 0:
            g_loss = -self.discriminator(reconstruction).mean()
            weight = adaptive_weight(rec_loss, g_loss, last_layer) * self.config.disc_weight
            loss = loss + weight * factor * g_loss
            logs.update(g_loss=g_loss.detach(), d_weight=weight)
        logs["total_loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(self, image: torch.Tensor, reconstruction: torch.Tensor, step: int
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_D on real images and detached reconstructions (zero before ``disc_start``)."""
        logits_real = self.discriminator(image.detach())
        logits_fake = self.discriminator(reconstruction.detach())
        loss = self.disc_factor(step) * self.d_loss(logits_real, logits_fake)
        logs = {"disc_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean()}
        return loss, logs
