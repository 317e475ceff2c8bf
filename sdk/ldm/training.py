"""Training of Stable Diffusion 1.x / 2.x: the latent denoising loss with conditioning dropout, an EMA of
the weights, and the autoencoder's reconstruction + KL loss.

Notation (Rombach et al. 2022, eq. (2) / Ho et al. 2020, eq. (14)): z_0 = vae_mean-or-sample * f
(``latent_scaling_factor``), t ~ U{0..T-1}, eps ~ N(0, I), z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,
L = || target - net(z_t, t, c) ||^2 with target eps or v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0.
For classifier-free guidance c is replaced by the empty-prompt embedding with probability p.
All randomness comes from the ``generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sampling import NoiseSchedule
from genrt.sdk.ldm.autoencoder import AutoencoderKL
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.unet import UNet2DCondition


@torch.no_grad()
def encode_latents(model: LatentDiffusion, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] -> (B, 4, H/8, W/8) scaled latents z_0 (a posterior sample times f)."""
    posterior = model.vae.posterior(images)
    noise = torch.randn(posterior.mean.shape, generator=generator, device=generator.device)
    return posterior.sample(noise.to(posterior.mean)) * model.config.latent_scaling_factor


def diffusion_loss(
    unet: UNet2DCondition,
    schedule: NoiseSchedule,
    latents: torch.Tensor,
    context: torch.Tensor,
    empty_context: torch.Tensor,
    generator: torch.Generator,
    cond_dropout: float = 0.1,
) -> torch.Tensor:
    """The denoising loss (scalar, float32) of one batch.

    latents: (B, 4, h, w) scaled z_0; context: (B, 77, D) prompt embeddings; empty_context: (1, 77, D)
    the empty prompt's embedding, used for a sample with probability ``cond_dropout``. Draws, in order:
    timesteps (B,), noise (B, 4, h, w), the dropout coin flips (B,).
    """
    if not 0.0 <= cond_dropout <= 1.0:
        raise InputError(f"cond_dropout is {cond_dropout}", fix="pass a probability in [0, 1] (SD used 0.1)")
    if empty_context.shape[0] != 1 or empty_context.shape[1:] != context.shape[1:]:
        raise InputError(
            f"`empty_context` | received {tuple(empty_context.shape)} | expected (1, {', '.join(map(str, context.shape[1:]))})",
            fix="encode the empty prompt [''] with the same text encoder",
        )
    batch, device = latents.shape[0], generator.device
    t = torch.randint(0, schedule.config.num_train_timesteps, (batch,), generator=generator, device=device)
    noise = torch.randn(latents.shape, generator=generator, device=device).to(latents)
    dropped = torch.rand(batch, generator=generator, device=device) < cond_dropout  # (B,)
    t, dropped = t.to(latents.device), dropped.to(latents.device)
    context = torch.where(dropped[:, None, None], empty_context.to(context), context)

    noisy = schedule.add_noise(latents, noise, t)  # z_t
    target = schedule.training_target(latents, noise, t)  # eps, v or z_0
    prediction = unet(noisy, t.to(latents.dtype), context)
    return F.mse_loss(prediction.float(), target.float())


class EMA:
    """Exponential moving average of a module's trainable parameters (LDM's ``LitEma``).

    shadow <- shadow + (1 - d) (param - shadow) with d = min(decay, (1 + n) / (10 + n)) after n
    updates, so early averages are not dominated by the random initialisation.
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay is {decay}", fix="pass a decay in [0, 1), e.g. 0.9999")
        self.decay = decay  # the asymptotic decay
        self.num_updates = 0  # updates so far (drives the warm-up of the decay)
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        for name, parameter in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(parameter.detach(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the averages (e.g. before saving or sampling)."""
        for name, parameter in module.named_parameters():
            if name in self.shadow:
                parameter.copy_(self.shadow[name])


def training_step(
    model: LatentDiffusion,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    generator: torch.Generator,
    *,
    schedule: NoiseSchedule | None = None,
    cond_dropout: float = 0.1,
    ema: EMA | None = None,
) -> float:
    """One optimiser step of the U-Net (the autoencoder and the text encoder stay frozen); returns the loss.

    images: (B, 3, H, W) in [-1, 1]; input_ids: (B, 77) the prompts' tokens; empty_ids: (1, 77) the
    empty prompt's tokens. ``schedule`` defaults to the model's configured one (and its prediction type).
    """
    schedule = schedule or NoiseSchedule(model.config.schedule_config())
    latents = encode_latents(model, images, generator)
    with torch.no_grad():
        context = model.text_encoder(input_ids)
        empty_context = model.text_encoder(empty_ids)
    model.unet.train()
    loss = diffusion_loss(model.unet, schedule, latents, context, empty_context, generator, cond_dropout)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model.unet)
    return float(loss.detach())


@dataclass(frozen=True)
class AutoencoderLoss:
    """The terms of the autoencoder loss of one batch (scalars)."""

    total: torch.Tensor  # reconstruction + kl_weight * kl
    reconstruction: torch.Tensor  # sum of |x - x_rec| per image, averaged over the batch
    kl: torch.Tensor  # KL(q(z|x) || N(0, I)) per image, averaged over the batch


def autoencoder_loss(vae: AutoencoderKL, images: torch.Tensor, noise: torch.Tensor,
                     kl_weight: float = 1e-6) -> AutoencoderLoss:
    """L1 reconstruction of a posterior sample plus weighted KL (the LDM autoencoder loss without its
    perceptual and adversarial terms). images: (B, 3, H, W) in [-1, 1]; noise: (B, 4, H/f, W/f)."""
    reconstruction, posterior = vae(images, noise)
    batch = images.shape[0]
    l1 = (images - reconstruction).abs().sum() / batch
    kl = posterior.kl().sum() / batch
    return AutoencoderLoss(total=l1 + kl_weight * kl, reconstruction=l1, kl=kl)
