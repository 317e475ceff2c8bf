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

from genrt.errors import InputError
from genrt.runtime.schedulers.schedule import NoiseSchedule, ScheduleConfig


def karras_denoised(model_output: np.ndarray, x: np.ndarray, sigma: float, prediction_type: str) -> np.ndarray:
    """D(x; sigma): the x_0 prediction in the sigma parameterisation (Karras table 1)."""
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return x / (sigma**2 + 1) - (sigma / (sigma**2 + 1) ** 0.5) * model_output
    return model_output


class EulerSampler:
    """Deterministic Euler sampler; the initial noise is scaled by ``init_noise_sigma``."""

    needs_noise = False

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
        """x (B, C, H, W), model_output (B, C, H, W) -> x at the next sigma. ``noise`` is not used."""
        if model_output.shape != x.shape:
            raise InputError(
                f"model_output has shape {tuple(model_output.shape)}, the sample {tuple(x.shape)}",
                fix="pass a model output of the sample's shape",
            )
        self._seek(t)
        sigma, sigma_next = self._sigmas[self._index], self._sigmas[self._index + 1]
        self._index += 1
        denoised = karras_denoised(model_output, x, sigma, self.config.prediction_type)  # D(x; sigma)
        derivative = (x - denoised) / sigma  # dx/dsigma
        return x + (sigma_next - sigma) * derivative

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
