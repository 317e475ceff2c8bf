"""Euler's method on the probability-flow ODE in the variance-exploding parameterisation of Karras et
al. 2022 ("EDM"), algorithm 1 without churn.

Notation:
    sigma_t = sqrt((1 - abar_t) / abar_t)      noise level of timestep t; sigma = 0 after the last step
    x = x_t / sqrt(abar_t) = x_0 + sigma eps    the sampler's state (variance sigma^2 + 1 at the start)
    network input  x / sqrt(sigma^2 + 1) = x_t  (``scale_model_input``)
    denoiser D(x; sigma) = c_skip x + c_out F   (Karras table 1; F the network output):
        epsilon: D = x - sigma F;  v_prediction: D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) F;  sample: D = F
    dx/dsigma = (x - D) / sigma,  x_next = x + (sigma_next - sigma) dx/dsigma
Timesteps are the schedule's integers, so sigma is looked up at them exactly (diffusers interpolates
because its "linspace" keeps fractional timesteps; ours rounds them, as DDIM does).
Numpy mirror of ``genrt.sdk.diffusion.euler`` (no torch): arrays keep their dtype (float32 or float64).
"""

from __future__ import annotations

import numpy as np

from genrt.runtime.schedulers.base import KarrasSampler, karras_denoised

__all__ = ["EulerSampler", "karras_denoised"]


class EulerSampler(KarrasSampler):
    """Deterministic Euler sampler; the initial noise is scaled by ``init_noise_sigma``. ``noise`` is not used."""

    needs_noise = False

    def _update(
        self, x: np.ndarray, denoised: np.ndarray, sigma: float, sigma_next: float, noise: np.ndarray | None, t: int
    ) -> np.ndarray:
        """x_next = x + (sigma_next - sigma) dx/dsigma; ``noise`` is not used."""
        derivative = (x - denoised) / sigma  # dx/dsigma
        return x + (sigma_next - sigma) * derivative
