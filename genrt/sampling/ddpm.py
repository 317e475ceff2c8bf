"""DDPM ancestral sampling (Ho et al. 2020) over a subsequence of timesteps, with the learned-range
variance of Nichol & Dhariwal 2021 ("improved DDPM"), as diffusers' ``DDPMScheduler``.

Notation, for the step from timestep t to the next visited timestep t' (t' = -1 after the last):
    abar_t, abar_t'               alphas_cumprod (abar_{-1} = 1: the last step lands on x_0)
    alpha_t = abar_t / abar_t'    beta_t = 1 - alpha_t   (the effective beta of the skipped stride)
    x_0 = f(model_output)         predicted x_0 (DDPM eq. 15 for epsilon), then thresholded or clipped
    mu = sqrt(abar_t') beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_t') / (1 - abar_t) x_t   (eq. 7)
    betatilde = (1 - abar_t') / (1 - abar_t) beta_t     posterior variance ("fixed_small"; "fixed_large": beta_t)
    learned_range: log var = f log beta_t + (1 - f) log betatilde,  f = (v + 1) / 2   (iDDPM eq. 15)
    x_t' = mu + sqrt(var) noise   (no noise when t = 0)
"""

from __future__ import annotations

import math

from genrt.errors import InputError
from genrt.sampling.arrays import ops_of
from genrt.sampling.base import TimestepSampler, check_noise, clip_prediction
from genrt.sampling.schedule import ScheduleConfig, x0_from_output

# log(0) guard for the posterior variance of the final step (abar_t' = 1 gives betatilde = 0).
MIN_VARIANCE = 1e-20


class DDPMSampler(TimestepSampler):
    """Stochastic DDPM sampler; ``step`` needs ``noise`` (shape of x) whenever t > 0."""

    needs_noise = True

    def __init__(
        self,
        config: ScheduleConfig,
        dynamic_threshold_percentile: float | None = None,
        dynamic_threshold_max: float | None = None,
    ):
        super().__init__(config)
        self.dynamic_threshold_percentile = dynamic_threshold_percentile  # None: no thresholding of x_0
        self.dynamic_threshold_max = dynamic_threshold_max  # cap on the threshold s (DeepFloyd IF: 1.5)

    def _step(self, model_output, x, noise):
        """x_t (B, C, H, W) -> x_t' (B, C, H, W). model_output is (B, C, H, W), or (B, 2C, H, W) for learned_range."""
        t = int(self._t)
        prev = int(self._timesteps[self._index + 1]) if self._index + 1 < len(self._timesteps) else -1
        channels = x.shape[1]
        learned = self.config.variance_type == "learned_range"
        expected = (x.shape[0], 2 * channels, *x.shape[2:]) if learned else tuple(x.shape)
        if tuple(model_output.shape) != expected:
            raise InputError(
                f"model_output has shape {tuple(model_output.shape)} for a sample of shape {tuple(x.shape)}",
                fix=f"pass model_output of shape {expected} (variance_type={self.config.variance_type!r})",
            )
        eps_or_v, variance_value = model_output[:, :channels], model_output[:, channels:]

        # 1. abar_t, abar_t' and the effective alpha_t / beta_t of this stride
        abar_t = float(self.schedule.alphas_cumprod[t])
        abar_prev = float(self.schedule.alphas_cumprod[prev]) if prev >= 0 else 1.0
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t

        # 2. predicted x_0, thresholded (Imagen) or clipped
        x0 = x0_from_output(eps_or_v, x, abar_t, self.config.prediction_type)
        x0 = clip_prediction(x0, self.config, self.dynamic_threshold_percentile, self.dynamic_threshold_max)

        # 3. posterior mean mu_tilde(x_t, x_0), eq. (7)
        mean = (abar_prev**0.5 * beta_t / (1 - abar_t)) * x0 + (alpha_t**0.5 * (1 - abar_prev) / (1 - abar_t)) * x
        if t == 0:
            return mean

        # 4. add sqrt(var) noise
        check_noise(noise, x, f"DDPM step at t={t}")
        posterior_variance = max((1 - abar_prev) / (1 - abar_t) * beta_t, MIN_VARIANCE)
        if self.config.variance_type == "fixed_small":
            return mean + posterior_variance**0.5 * noise
        if self.config.variance_type == "fixed_large":
            return mean + beta_t**0.5 * noise
        fraction = (variance_value + 1) / 2
        log_variance = fraction * math.log(beta_t) + (1 - fraction) * math.log(posterior_variance)
        return mean + ops_of(x).exp(0.5 * log_variance) * noise
