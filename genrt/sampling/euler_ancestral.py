"""Euler ancestral sampling (Karras et al. 2022 parameterisation; the ancestral split of k-diffusion's
``sample_euler_ancestral`` with eta = 1), as diffusers' ``EulerAncestralDiscreteScheduler``.

Notation (see euler.py for sigma, x and D):
    sigma_up   = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)   fresh noise added this step
    sigma_down = sqrt(sigma_next^2 - sigma_up^2) = sigma_next^2 / sigma  deterministic target noise level
    x_next = x + (sigma_down - sigma) (x - D) / sigma + sigma_up noise
so that x_next has noise level sigma_next and the marginals match DDPM ancestral sampling.
"""

from __future__ import annotations

from genrt.sampling.base import SigmaSampler, check_noise, refuse_fields
from genrt.sampling.schedule import ScheduleConfig


class EulerAncestralSampler(SigmaSampler):
    """Stochastic Euler sampler; ``step`` needs ``noise`` (shape of x) on every step but the last."""

    needs_noise = True

    def __init__(self, config: ScheduleConfig):
        refuse_fields(config, "euler_ancestral", use_karras_sigmas=False, final_sigmas_type="zero")
        super().__init__(config)

    def _step(self, model_output, x, noise):
        """Deterministic to sigma_down, then sigma_up fresh ``noise`` (B, C, H, W) up to sigma_next."""
        sigma, sigma_next, denoised = self._denoised(model_output, x)
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = sigma_next**2 / sigma  # = sqrt(sigma_next^2 - sigma_up^2), without cancellation
        x_next = x + (sigma_down - sigma) * ((x - denoised) / sigma)
        if sigma_up == 0:
            return x_next
        check_noise(noise, x, f"Euler ancestral step at t={self._t}")
        return x_next + sigma_up * noise
