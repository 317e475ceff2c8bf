"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. (12) and (16).

Notation, for the step from timestep t to the previous visited timestep t' (t' = -1 after the last):
    abar_t, abar_t'        alphas_cumprod (abar_{-1} = 1: the last step lands on x_0)
    x_0, eps               predicted from the model output; with dynamic thresholding x_0 is clipped and
                           eps re-derived from it, eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)
    sigma_t = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')          eq. (16)
    x_t' = sqrt(abar_t') x_0 + sqrt(1 - abar_t' - sigma_t^2) eps + sigma_t noise          eq. (12)
eta = 0 is the deterministic DDIM; eta = 1 has the DDPM posterior variance.
Numpy mirror of ``genrt.sdk.diffusion.ddim`` (no torch): arrays keep their dtype (float32 or float64).
"""

from __future__ import annotations

import numpy as np

from genrt.errors import InputError
from genrt.runtime.schedulers.guidance import dynamic_threshold
from genrt.runtime.schedulers.schedule import NoiseSchedule, ScheduleConfig, epsilon_from_output, x0_from_output


class DDIMSampler:
    """DDIM sampler; with ``eta > 0``, ``step`` needs ``noise`` (shape of x)."""

    init_noise_sigma = 1.0

    def __init__(
        self,
        config: ScheduleConfig,
        eta: float = 0.0,
        dynamic_threshold_percentile: float | None = None,
        dynamic_threshold_max: float | None = None,
    ):
        if eta < 0:
            raise InputError(f"DDIM eta is {eta}", fix="pass eta >= 0 (0 = deterministic, 1 = DDPM-like)")
        self.config = config
        self.schedule = NoiseSchedule(config)
        self.eta = eta  # stochasticity: 0 deterministic DDIM, 1 the DDPM posterior variance
        self.needs_noise = eta > 0
        self.dynamic_threshold_percentile = dynamic_threshold_percentile  # None: no thresholding of x_0
        self.dynamic_threshold_max = dynamic_threshold_max  # cap on the threshold s (DeepFloyd IF: 1.5)
        self._timesteps: list[int] = []
        self._index = 0

    def set_timesteps(self, num_steps: int) -> np.ndarray:
        """Descending timesteps (num_steps,) int64 array; resets the sampler."""
        self._timesteps = self.schedule.timesteps(num_steps)
        self._index = 0
        return np.array(self._timesteps, dtype=np.int64)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """The state at timestep ``t`` for a clean x_0 (img2img): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        return self.schedule.add_noise(x0, noise, int(t))

    def scale_model_input(self, x: np.ndarray, t) -> np.ndarray:
        """DDIM feeds x_t to the network unchanged."""
        return x

    def step(self, model_output: np.ndarray, t, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """x_t (B, C, H, W), model_output (B, C, H, W) -> x_t' (B, C, H, W)."""
        if model_output.shape != x.shape:
            raise InputError(
                f"model_output has shape {tuple(model_output.shape)}, the sample {tuple(x.shape)}",
                fix="pass a model output of the sample's shape",
            )
        t = self._advance(t)
        prev = self._timesteps[self._index] if self._index < len(self._timesteps) else -1

        # 1. abar_t and abar_t'
        abar_t = float(self.schedule.alphas_cumprod[t])
        abar_prev = float(self.schedule.alphas_cumprod[prev]) if prev >= 0 else 1.0

        # 2. predicted x_0 and eps (eps re-derived from a thresholded x_0)
        prediction = self.config.prediction_type
        x0 = x0_from_output(model_output, x, abar_t, prediction)
        if self.dynamic_threshold_percentile is not None:
            x0 = dynamic_threshold(x0, self.dynamic_threshold_percentile, self.dynamic_threshold_max)
            eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5
        else:
            eps = epsilon_from_output(model_output, x, abar_t, prediction)

        # 3. sigma_t, eq. (16), and the update, eq. (12)
        sigma = self.eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        x_prev = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma == 0.0:
            return x_prev
        if noise is None or noise.shape != x.shape:
            got = None if noise is None else tuple(noise.shape)
            raise InputError(f"DDIM step with eta={self.eta} got noise {got}", fix=f"pass noise of shape {tuple(x.shape)}")
        return x_prev + sigma * noise

    def _advance(self, t) -> int:
        """Move past timestep ``t``: the next one of the schedule, or a later one (img2img starts part-way)."""
        remaining = self._timesteps[self._index :]
        if int(t) not in remaining:
            expected = remaining[0] if remaining else "none (finished)"
            raise InputError(
                f"step() got timestep {int(t)} but the next timestep is {expected}",
                fix="call set_timesteps() first, then step() once per timestep in order",
            )
        self._index += remaining.index(int(t)) + 1
        return int(t)
