"""Euler's method on the probability-flow ODE in the variance-exploding parameterisation of Karras et
al. 2022 ("EDM"), algorithm 1 without churn, as diffusers' ``EulerDiscreteScheduler``.

Notation:
    sigma_t = sqrt((1 - abar_t) / abar_t)      noise level of timestep t, interpolated at fractional
                                               timesteps (linspace spacing); sigma after the last step: 0
    x = x_t / sqrt(abar_t) = x_0 + sigma eps    the sampler's state
    network input  x / sqrt(sigma^2 + 1) = x_t  (``scale_model_input``)
    denoiser D(x; sigma) = c_skip x + c_out F   (Karras table 1; F the network output):
        epsilon: D = x - sigma F;  v_prediction: D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) F;  sample: D = F
    dx/dsigma = (x - D) / sigma,  x_next = x + (sigma_next - sigma) dx/dsigma
"""

from __future__ import annotations

from genrt.sampling.base import SigmaSampler


class EulerSampler(SigmaSampler):
    """Deterministic Euler sampler; the initial noise is scaled by ``init_noise_sigma``. ``noise`` is not used."""

    def _step(self, model_output, x, noise):
        """x_next = x + (sigma_next - sigma) dx/dsigma; ``noise`` is not used."""
        sigma, sigma_next, denoised = self._denoised(model_output, x)
        derivative = (x - denoised) / sigma  # dx/dsigma
        return x + (sigma_next - sigma) * derivative
