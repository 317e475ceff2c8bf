"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2), as diffusers'
``DPMSolverMultistepScheduler`` (dpmsolver++, order 2, midpoint): a deterministic second-order multistep
solver of the diffusion ODE written on data (x_0) predictions.

Notation for the step from s = t_{i-1} (current) to t = t_i, at the noise levels sigma of the schedule:
    alpha = 1 / sqrt(sigma^2 + 1), sigma_hat = sigma alpha (= sqrt(abar), sqrt(1 - abar)), lambda = -log sigma
    h = lambda_t - lambda_s,   r = h_prev / h
    x0_i                     the data prediction at s (from eps / v / x_0 outputs)
    D = x0_i + (x0_i - x0_{i-1}) / (2 r)     (second order; D = x0_i on the first step after a start or skip,
                                               and on the last: always to sigma 0, below 15 steps to sigma_min)
    x_t = (sigma_hat_t / sigma_hat_s) x_s - alpha_t (e^{-h} - 1) D
The step to sigma = 0 returns x0_i (lambda = +inf, the limit of the first-order update). No noise.
"""

from __future__ import annotations

import math

import numpy as np

from genrt.sampling.base import SigmaSampler, check_model_output
from genrt.sampling.schedule import x0_from_output

# Below this many steps lower_order_final makes the last step first order (diffusers).
LOWER_ORDER_FINAL_STEPS = 15


class DPMSolverPP2MSampler(SigmaSampler):
    """DPM-Solver++(2M) on x_t with the sigmas of the schedule (Karras ramp optional)."""

    timestep_rule = "multistep"
    karras_range = "table"
    init_noise_sigma = 1.0

    def _karras_timesteps(self, timesteps: np.ndarray) -> np.ndarray:
        """diffusers rounds them to integers, except on the cosine schedule."""
        return timesteps if self.config.beta_schedule == "cosine" else timesteps.round().astype(np.int64)

    def _scale(self, x):
        """x_t goes to the network unchanged."""
        return x

    def add_noise(self, x0, noise, t):
        """The state at timestep ``t`` of the schedule for a clean x_0 (img2img): alpha x_0 + sigma_hat noise."""
        sigma = self._sigma_at(t)
        alpha = 1 / (sigma**2 + 1) ** 0.5
        return alpha * x0 + (sigma * alpha) * noise

    def _step(self, model_output, x, noise):
        """x_t (B, C, H, W), model_output (B, C, H, W) -> x at the next timestep. ``noise`` is not used."""
        check_model_output(model_output, x)
        sigma_s, sigma_t = self.sigmas[self._index], self.sigmas[self._index + 1]

        # 1. data prediction x0_i at the current timestep
        alpha_s = 1 / (sigma_s**2 + 1) ** 0.5
        x0 = x0_from_output(model_output, x, alpha_s**2, self.config.prediction_type)
        self._history = self._history[-1:] + [(x0, sigma_s)]
        last = self._index == len(self._timesteps) - 1
        first_order = self._steps_taken < 1 or (last and (
            self.config.final_sigmas_type == "zero"
            or (self.config.lower_order_final and len(self._timesteps) < LOWER_ORDER_FINAL_STEPS)))
        if sigma_t == 0.0:  # to sigma = 0: the first-order limit is x0 itself
            return x0

        # 2. alpha, sigma_hat, h
        alpha_t = 1 / (sigma_t**2 + 1) ** 0.5
        h = math.log(sigma_s) - math.log(sigma_t)

        # 3. D: first order, or the multistep correction with r = h_prev / h
        d = x0
        if not first_order:
            previous_x0, sigma_prev = self._history[0]
            r = (math.log(sigma_prev) - math.log(sigma_s)) / h
            d = x0 + (1 / (2 * r)) * (x0 - previous_x0)

        # 4. x_t = (sigma_hat_t / sigma_hat_s) x - alpha_t (e^{-h} - 1) D
        return ((sigma_t * alpha_t) / (sigma_s * alpha_s)) * x - (alpha_t * math.expm1(-h)) * d
