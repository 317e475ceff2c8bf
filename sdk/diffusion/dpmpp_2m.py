"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2): a deterministic second-order
multistep solver of the diffusion ODE written on data (x_0) predictions.

Notation for the step from t_{i-1} (current) to t_i (next visited timestep):
    alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t)  (half log-SNR)
    h_i = lambda_{t_i} - lambda_{t_{i-1}},   r_i = h_{i-1} / h_i
    x0_i                     the data prediction at t_{i-1} (from eps / v / x_0 outputs)
    D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}     (second order; D_i = x0_i on the first step)
    x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i
The last step goes to sigma = 0 (abar = 1) and is first order: it returns x0 of the last model call
(lambda = +inf there, the limit of the first-order update). The sampler is deterministic: no noise.
"""

from __future__ import annotations

import math

import torch

from genrt.sdk.diffusion.base import TimestepSampler, check_model_output
from genrt.sdk.diffusion.schedule import ScheduleConfig, x0_from_output


class DPMSolverPP2MSampler(TimestepSampler):
    """DPM-Solver++(2M) with a first-order first and last step."""

    needs_noise = False

    def __init__(self, config: ScheduleConfig):
        super().__init__(config)
        self._previous_x0: torch.Tensor | None = None  # x0_{i-1}, the data prediction of the previous step
        self._previous_h: float | None = None  # h_{i-1}

    def set_timesteps(self, num_steps: int) -> torch.Tensor:
        """Descending timesteps (num_steps,) int64; resets the multistep history."""
        timesteps = super().set_timesteps(num_steps)
        self._previous_x0 = None
        self._previous_h = None
        return timesteps

    def step(self, model_output: torch.Tensor, t, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), model_output (B, C, H, W) -> x at the next timestep. ``noise`` is not used."""
        check_model_output(model_output, x)
        t, following = self._advance(t)

        # 1. data prediction x0_i at the current timestep
        abar_s = self._alpha_bar(t)
        x0 = x0_from_output(model_output, x, abar_s, self.config.prediction_type)
        if following < 0:  # final step to sigma = 0: first-order limit is x0 itself
            return x0

        # 2. alpha, sigma, lambda at the current (s) and next (t) timestep; h_i
        abar_t = self._alpha_bar(following)
        alpha_t, sigma_t, sigma_s = abar_t**0.5, (1 - abar_t) ** 0.5, (1 - abar_s) ** 0.5
        h = _half_log_snr(abar_t) - _half_log_snr(abar_s)

        # 3. D_i: first order on the first step, else the multistep correction with r_i = h_{i-1} / h_i
        if self._previous_x0 is None:
            d = x0
        else:
            r = self._previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self._previous_x0
        self._previous_x0, self._previous_h = x0, h

        # 4. x_{t_i} = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) D_i
        return (sigma_t / sigma_s) * x - (alpha_t * math.expm1(-h)) * d

    def _advance(self, t) -> tuple[int, int]:
        """As the base, and a skip (img2img starts part-way) drops the history: it belongs to the skipped timesteps."""
        if self._skipped(t):
            self._previous_x0, self._previous_h = None, None
        return super()._advance(t)


def _half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar))."""
    return 0.5 * math.log(alpha_bar / (1 - alpha_bar))
