"""One training step of an Imagen cascade stage (base or super-resolution).

Ho et al. 2020's simple loss on the network's prediction target, plus for U-Nets with a learned
variance (6 output channels) the variational bound term of Nichol & Dhariwal 2021 ("improved DDPM",
hybrid loss: L_simple + lambda L_vlb, with the mean's gradient stopped inside L_vlb). Text is dropped
to the unconditional (all-padding) prompt with probability ``text_drop_prob`` so that the model learns
classifier-free guidance; SR stages see the low-res image noised at a random augmentation level.

All randomness comes from the ``generator`` passed in: a fixed seed gives a reproducible step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from genrt.errors import ConfigError, InputError
from genrt.sampling import NoiseSchedule
from genrt.sdk.imagen.augment import augment_low_res, random_augmentation_levels, upsample_low_res

# Width of one intensity bin of an 8-bit image in [-1, 1] (discretised decoder likelihood at t = 0).
BIN_WIDTH = 2.0 / 255.0


@dataclass(frozen=True)
class TrainingConfig:
    """How a stage is trained."""

    text_drop_prob: float = 0.1  # fraction of prompts replaced by the empty prompt (classifier-free guidance)
    max_augmentation_level: int = 1000  # SR stages: augmentation levels uniform in 0..max-1
    vlb_weight: float = 0.001  # lambda of L_vlb for learned-variance U-Nets (improved DDPM)

    def __post_init__(self):
        if not 0.0 <= self.text_drop_prob <= 1.0:
            raise ConfigError(f"text_drop_prob is {self.text_drop_prob}", fix="pass a probability in [0, 1]")


@dataclass(frozen=True)
class StepLoss:
    """The loss of one step (backpropagate ``loss``) and its parts, for logging."""

    loss: torch.Tensor  # () L_simple + vlb_weight * L_vlb
    simple: torch.Tensor  # () mean squared error on the prediction target
    vlb: torch.Tensor  # () variational bound term in bits per dim (0 without a learned variance)


def _normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_nll(x0: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log P(x0) of 8-bit pixel bins under N(mean, e^logvar), elementwise (edge bins open-ended)."""
    inv_std = torch.exp(-0.5 * logvar)
    normal = torch.distributions.Normal(0.0, 1.0)
    cdf_plus = normal.cdf(inv_std * (x0 - mean + BIN_WIDTH / 2))
    cdf_minus = normal.cdf(inv_std * (x0 - mean - BIN_WIDTH / 2))
    probability = torch.where(x0 < -0.999, cdf_plus, torch.where(x0 > 0.999, 1 - cdf_minus, cdf_plus - cdf_minus))
    return -torch.log(probability.clamp(min=1e-12))


def vlb_term(schedule: NoiseSchedule, x0, x_t, t, prediction, variance_value) -> torch.Tensor:
    """L_t of the variational bound per sample (B,), in bits per dim; the mean uses the detached prediction.

    t > 0: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); t = 0: -log p(x_0 | x_1) (discretised).
    The learned variance interpolates log beta_t and the clipped log posterior variance (iDDPM eq. 15).
    """
    abar = torch.from_numpy(schedule.alphas_cumprod).to(x0.device)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = torch.from_numpy(schedule.betas).to(x0.device)
    posterior_var = betas * (1 - abar_prev) / (1 - abar)
    log_posterior = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]]))  # clipped at t = 0

    def at(values):  # (T,) -> (B, 1, 1, 1) in the sample's dtype
        return values[t].to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))

    coef_x0 = at(abar_prev.sqrt() * betas / (1 - abar))
    coef_xt = at((1 - betas).sqrt() * (1 - abar_prev) / (1 - abar))
    true_mean = coef_x0 * x0 + coef_xt * x_t
    x0_pred = schedule.predict_x0(prediction.detach(), x_t, t)
    model_mean = coef_x0 * x0_pred + coef_xt * x_t
    fraction = (variance_value + 1) / 2
    model_logvar = fraction * at(torch.log(betas)) + (1 - fraction) * at(log_posterior)
    kl = _normal_kl(true_mean, at(log_posterior), model_mean, model_logvar).flatten(1).mean(1)
    nll = _discretized_nll(x0, model_mean, model_logvar).flatten(1).mean(1)
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def training_step(
    model: nn.Module,
    images: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_mask: torch.Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator,
    *,
    low_res: torch.Tensor | None = None,
    config: TrainingConfig = TrainingConfig(),
) -> StepLoss:
    """The loss of one batch; the caller backpropagates ``loss`` and steps its optimiser.

    images: (B, 3, H, W) in [-1, 1]; text_embeddings: (B, T, D); text_mask: (B, T);
    low_res: (B, 3, h, w) in [-1, 1] for SR stages (h <= H; upsampled and augmented here).
    Random draws from ``generator``, in order: timesteps, noise, text-drop coins, then for SR stages
    augmentation levels and augmentation noise.
    """
    batch, channels = images.shape[:2]
    device, dtype = images.device, images.dtype
    sr = model.config.low_res_cond
    if sr != (low_res is not None):
        raise InputError("`low_res` is needed by super-resolution stages and only by them",
                         fix="pass the low-res images to SR stages, none to the base stage")

    def randn(shape):
        return torch.randn(shape, generator=generator, device=generator.device).to(device, dtype)

    # 1. Timesteps, noise and the noised images x_t.
    t = torch.randint(0, schedule.config.num_train_timesteps, (batch,), generator=generator,
                      device=generator.device).to(device)
    noise = randn(images.shape)
    x_t = schedule.add_noise(images, noise, t)
    # 2. Drop prompts to the unconditional input: no valid tokens (the U-Net attends to its null key).
    keep = torch.rand(batch, generator=generator, device=generator.device).to(device) >= config.text_drop_prob
    text_mask = text_mask * keep[:, None].to(text_mask.dtype)
    text_embeddings = text_embeddings * keep[:, None, None].to(dtype)
    # 3. SR stages: upsample the low-res image and noise it at a random augmentation level per sample.
    extra = {}
    if sr:
        levels = random_augmentation_levels(batch, config.max_augmentation_level, generator).to(device)
        upsampled = upsample_low_res(low_res, images.shape[-1])
        extra = {"low_res": augment_low_res(upsampled, levels, randn(upsampled.shape), schedule),
                 "noise_level": levels}
    # 4. Loss: MSE on the prediction target, plus the bound for a learned variance.
    output = model(x_t, t.to(torch.float32), text_embeddings, text_mask, **extra)
    prediction = output[:, :channels]
    simple = ((prediction - schedule.training_target(images, noise, t)) ** 2).mean()
    vlb = simple.new_zeros(())
    if output.shape[1] == 2 * channels:
        vlb = vlb_term(schedule, images, x_t, t, prediction, output[:, channels:]).mean()
    return StepLoss(loss=simple + config.vlb_weight * vlb, simple=simple, vlb=vlb)
