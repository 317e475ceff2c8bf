"""What the samplers share: the walk over the schedule's timesteps and the argument checks.

Two families, one base each; every sampler file keeps only its own update rule and notation.
    TimestepSampler   the state is x_t itself, initial noise N(0, I) (DDPM, DDIM, DPM-Solver++(2M));
                      ``step`` moves from timestep t to the next visited t' (t' = -1 after the last: x_0)
    KarrasSampler     the state is x = x_t / sqrt(abar_t) with noise level sigma_t = sqrt((1 - abar_t) / abar_t)
                      (Karras et al. 2022; Euler, Euler ancestral; notation in euler.py)
Numpy mirror of ``genrt.sdk.diffusion.base`` (no torch): arrays keep their dtype (float32 or float64).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from genrt.errors import InputError
from genrt.runtime.schedulers.schedule import NoiseSchedule, ScheduleConfig


def check_model_output(model_output: np.ndarray, x: np.ndarray) -> None:
    """Refuse a model output (B, C, H, W) whose shape is not the sample's."""
    if model_output.shape != x.shape:
        raise InputError(
            f"model_output has shape {tuple(model_output.shape)}, the sample {tuple(x.shape)}",
            fix="pass a model output of the sample's shape",
        )


def check_noise(noise: np.ndarray | None, x: np.ndarray, where: str) -> None:
    """Refuse missing noise, or noise not of the sample's shape (B, C, H, W); ``where`` names the step."""
    if noise is None or noise.shape != x.shape:
        got = None if noise is None else tuple(noise.shape)
        raise InputError(f"{where} got noise {got}", fix=f"pass noise of shape {tuple(x.shape)}")


def steps_ahead(remaining: list[int], t, error: str, fix: str) -> int:
    """How many of ``remaining`` (the timesteps still to visit, descending) come before timestep ``t``: 0 for
    the expected one, more when img2img starts part-way. Any other t raises InputError(error, fix), ``error``
    formatted with ``t`` and the ``expected`` timestep."""
    if int(t) not in remaining:
        expected = remaining[0] if remaining else "none (finished)"
        raise InputError(error.format(t=int(t), expected=expected), fix=fix)
    return remaining.index(int(t))


def karras_denoised(model_output: np.ndarray, x: np.ndarray, sigma: float, prediction_type: str) -> np.ndarray:
    """D(x; sigma): the x_0 prediction in the sigma parameterisation (Karras table 1)."""
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return x / (sigma**2 + 1) - (sigma / (sigma**2 + 1) ** 0.5) * model_output
    return model_output


class TimestepSampler:
    """Base of the samplers on x_t: timesteps, img2img ``add_noise`` and the move from t to the next t'."""

    init_noise_sigma = 1.0

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.schedule = NoiseSchedule(config)
        self._timesteps: list[int] = []  # descending, from set_timesteps()
        self._index = 0  # position in _timesteps of the next timestep to visit

    def set_timesteps(self, num_steps: int) -> np.ndarray:
        """Descending timesteps (num_steps,) int64 array; resets the sampler."""
        self._timesteps = self.schedule.timesteps(num_steps)
        self._index = 0
        return np.array(self._timesteps, dtype=np.int64)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """The state at timestep ``t`` for a clean x_0 (img2img): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        return self.schedule.add_noise(x0, noise, int(t))

    def scale_model_input(self, x: np.ndarray, t) -> np.ndarray:
        """x_t goes to the network unchanged."""
        return x

    def _skipped(self, t) -> int:
        """How many timesteps still to visit come before ``t`` (img2img starts part-way); refuses any other t."""
        return steps_ahead(
            self._timesteps[self._index :],
            t,
            "step() got timestep {t} but the next timestep is {expected}",
            fix="call set_timesteps() first, then step() once per timestep in order",
        )

    def _advance(self, t) -> tuple[int, int]:
        """Move past timestep ``t``: the next one of the schedule, or a later one. Returns (t, t'), t' the
        next timestep to visit, -1 after the last."""
        self._index += self._skipped(t) + 1
        following = self._timesteps[self._index] if self._index < len(self._timesteps) else -1
        return int(t), following

    def _alpha_bar(self, t: int) -> float:
        """abar_t as a float; abar_{-1} = 1 (the last step lands on x_0)."""
        return float(self.schedule.alphas_cumprod[t]) if t >= 0 else 1.0


class KarrasSampler(ABC):
    """Base of the samplers on x = x_t / sqrt(abar_t): sigmas, ``init_noise_sigma``, input scaling, img2img,
    and ``step`` up to the denoiser D(x; sigma); a subclass writes only its update rule, ``_update``."""

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.schedule = NoiseSchedule(config)
        self._timesteps: list[int] = []  # descending, from set_timesteps()
        self._sigmas: list[float] = []  # sigma at each timestep, then 0
        self._index = 0  # position in _timesteps of the current timestep

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
        """x (B, C, H, W), model_output (B, C, H, W), noise (B, C, H, W) or None -> x at the next sigma."""
        check_model_output(model_output, x)
        self._seek(t)
        sigma, sigma_next = self._sigmas[self._index], self._sigmas[self._index + 1]
        denoised = karras_denoised(model_output, x, sigma, self.config.prediction_type)  # D(x; sigma)
        x_next = self._update(x, denoised, sigma, sigma_next, noise, int(t))
        self._index += 1
        return x_next

    @abstractmethod
    def _update(
        self, x: np.ndarray, denoised: np.ndarray, sigma: float, sigma_next: float, noise: np.ndarray | None, t: int
    ) -> np.ndarray:
        """The sampler's rule: x (B, C, H, W) at ``sigma`` and D(x; sigma) -> x at ``sigma_next``; ``t`` for messages."""

    def _seek(self, t) -> None:
        """Move to timestep ``t``: the current one, or a later one of the schedule (img2img starts part-way)."""
        self._index += steps_ahead(
            self._timesteps[self._index :],
            t,
            "got timestep {t} but the current timestep is {expected}",
            fix="call set_timesteps() first, then scale_model_input()/step() once per timestep in order",
        )
