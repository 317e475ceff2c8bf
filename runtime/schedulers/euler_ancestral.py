"""Euler ancestral sampling (Karras et al. 2022 parameterisation; the ancestral split of k-diffusion's
``sample_euler_ancestral`` with eta = 1).

Notation (see euler.py for sigma, x and D):
    sigma_up   = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)   fresh noise added this step
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)                        deterministic target noise level
    x_next = x + (sigma_down - sigma) (x - D) / sigma + sigma_up noise
so that x_next has noise level sigma_next and the marginals match DDPM ancestral sampling.
Numpy mirror of ``genrt.sdk.diffusion.euler_ancestral`` (no torch): arrays keep their dtype (float32 or float64).
"""

from __future__ import annotations

import numpy as np

from genrt.runtime.schedulers.base import KarrasSampler, check_noise


class EulerAncestralSampler(KarrasSampler):
    """Stochastic Euler sampler; ``step`` needs ``noise`` (shape of x) on every step but the last."""

    needs_noise = True

    def _update(
        self, x: np.ndarray, denoised: np.ndarray, sigma: float, sigma_next: float, noise: np.ndarray | None, t: int
    ) -> np.ndarray:
        """Deterministic to sigma_down, then sigma_up fresh ``noise`` (B, C, H, W) up to sigma_next."""
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = sigma_next**2 / sigma  # = sqrt(sigma_next^2 - sigma_up^2), without cancellation
        if sigma_up > 0:
            check_noise(noise, x, f"Euler ancestral step at t={t}")
        x_next = x + (sigma_down - sigma) * ((x - denoised) / sigma)
        return x_next + sigma_up * noise if sigma_up > 0 else x_next
