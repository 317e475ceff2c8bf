"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. (12) and (16), as diffusers'
``DDIMScheduler``.

Notation, for the step from timestep t to t' = t - T // n (n inference steps; t' < 0 after the last):
    abar_t, abar_t'        alphas_cumprod (abar_{t'<0} = 1 with set_alpha_to_one, else abar_0)
    x_0, eps               predicted from the model output; x_0 then thresholded or clipped (eps is not
                           re-derived from it, as diffusers without ``use_clipped_model_output``)
    sigma_t = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')          eq. (16)
    x_t' = sqrt(abar_t') x_0 + sqrt(1 - abar_t' - sigma_t^2) eps + sigma_t noise          eq. (12)
eta = 0 is the deterministic DDIM; eta = 1 has the DDPM posterior variance.
"""

from __future__ import annotations

from genrt.errors import InputError
from genrt.sampling.base import TimestepSampler, check_model_output, check_noise, clip_prediction
from genrt.sampling.schedule import ScheduleConfig, epsilon_from_output, x0_from_output


class DDIMSampler(TimestepSampler):
    """DDIM sampler; with ``eta > 0``, ``step`` needs ``noise`` (shape of x)."""

    def __init__(
        self,
        config: ScheduleConfig,
        eta: float = 0.0,
        dynamic_threshold_percentile: float | None = None,
        dynamic_threshold_max: float | None = None,
    ):
        if eta < 0:
            raise InputError(f"DDIM eta is {eta}", fix="pass eta >= 0 (0 = deterministic, 1 = DDPM-like)")
        super().__init__(config)
        self.eta = eta  # stochasticity: 0 deterministic DDIM, 1 the DDPM posterior variance
        self.needs_noise = eta > 0
        self.dynamic_threshold_percentile = dynamic_threshold_percentile  # None: no thresholding of x_0
        self.dynamic_threshold_max = dynamic_threshold_max  # cap on the threshold s (DeepFloyd IF: 1.5)

    def _step(self, model_output, x, noise):
        """x_t (B, C, H, W), model_output (B, C, H, W) -> x_t' (B, C, H, W)."""
        check_model_output(model_output, x)
        t = int(self._t)
        prev = t - self.config.num_train_timesteps // self.num_steps

        # 1. abar_t and abar_t'
        abar_t, abar_prev = self._alpha_bar(t), self._alpha_bar(prev)

        # 2. predicted x_0 (thresholded or clipped) and eps
        prediction = self.config.prediction_type
        x0 = x0_from_output(model_output, x, abar_t, prediction)
        eps = epsilon_from_output(model_output, x, abar_t, prediction)
        x0 = clip_prediction(x0, self.config, self.dynamic_threshold_percentile, self.dynamic_threshold_max)

        # 3. sigma_t, eq. (16), and the update, eq. (12)
        sigma = self.eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        x_prev = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma == 0.0:
            return x_prev
        check_noise(noise, x, f"DDIM step with eta={self.eta}")
        return x_prev + sigma * noise
