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

from genrt.errors import InputError
from genrt.runtime.schedulers.euler import karras_denoised
from genrt.runtime.schedulers.schedule import NoiseSchedule, ScheduleConfig


class EulerAncestralSampler:
    """Stochastic Euler sampler; ``step`` needs ``noise`` (shape of x) on every step but the last."""

    needs_noise = True

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.schedule = NoiseSchedule(config)
        self._timesteps: list[int] = []
        self._sigmas: list[float] = []  # sigma at each timestep, then 0
        self._index = 0

    def set_timesteps(self, num_steps: int) -> np.ndarray:
        """Descending timesteps (num_steps,) int64 array; resets the sampler."""
        self._timesteps = self.schedule.timesteps(num_steps)
        alphas_cumprod = self.schedule.alphas_cumprod
        self._sigmas = [float((1 - alphas_cumprod[t]) / alphas_cumprod[t]) ** 0.5 for t in self._timesteps] + [0.0]
        self._index = 0
        return np.array(self._timesteps, dtype=np.int64)

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of x at the first timestep: sqrt(sigma_max^2 + 1)."""
        if not self._sigmas:
            raise InputError("init_noise_sigma is read before set_timesteps()", fix="call set_timesteps(num_steps) first")
        return (self._sigmas[0] ** 2 + 1) ** 0.5

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """The sampler's state at timestep ``t`` for a clean x_0 (img2img): x = x_0 + sigma_t noise."""
        alpha_bar = self.schedule.alpha_bar(int(t), x0)
        return x0 + ((1 - alpha_bar) / alpha_bar) ** 0.5 * noise

    def scale_model_input(self, x: np.ndarray, t) -> np.ndarray:
        """x -> x / sqrt(sigma_t^2 + 1) = x_t, the input the network was trained on. ``t``: the current timestep."""
        self._seek(t)
        return x / (self._sigmas[self._index] ** 2 + 1) ** 0.5

    def step(self, model_output: np.ndarray, t, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """x (B, C, H, W), model_output (B, C, H, W), noise (B, C, H, W) -> x at the next sigma."""
        if model_output.shape != x.shape:
            raise InputError(
                f"model_output has shape {tuple(model_output.shape)}, the sample {tuple(x.shape)}",
                fix="pass a model output of the sample's shape",
            )
        self._seek(t)
        sigma, sigma_next = self._sigmas[self._index], self._sigmas[self._index + 1]
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = sigma_next**2 / sigma  # = sqrt(sigma_next^2 - sigma_up^2), without cancellation
        if sigma_up > 0 and (noise is None or noise.shape != x.shape):
            got = None if noise is None else tuple(noise.shape)
            raise InputError(f"Euler ancestral step at t={int(t)} got noise {got}", fix=f"pass noise of shape {tuple(x.shape)}")
        self._index += 1
        denoised = karras_denoised(model_output, x, sigma, self.config.prediction_type)  # D(x; sigma)
        x_next = x + (sigma_down - sigma) * ((x - denoised) / sigma)
        return x_next + sigma_up * noise if sigma_up > 0 else x_next

    def _seek(self, t) -> None:
        """Move to timestep ``t``: the current one, or a later one of the schedule (img2img starts part-way)."""
        remaining = self._timesteps[self._index :]
        if int(t) not in remaining:
            expected = remaining[0] if remaining else "none (finished)"
            raise InputError(
                f"got timestep {int(t)} but the current timestep is {expected}",
                fix="call set_timesteps() first, then scale_model_input()/step() once per timestep in order",
            )
        self._index += remaining.index(int(t))
