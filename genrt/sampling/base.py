"""What the samplers share: the walk over the schedule's timesteps, the argument checks and the two states.

Every sampler: ``timesteps = set_timesteps(n)`` (numpy: int64, or float32 for the sigma samplers, as
diffusers), then per timestep ``scale_model_input(x, t)`` and ``step(model_output, t, x, noise)``. Starting
later (img2img) is calling them with a later timestep of the schedule: the timesteps between are skipped and
a multistep sampler's history (which belongs to them) is dropped. Two states:
    TimestepSampler   the state is x_t itself, initial noise N(0, I) (DDPM, DDIM, PNDM, DPM-Solver++(2M))
    SigmaSampler      the state is x = x_t / sqrt(abar_t) with noise level sigma_t = sqrt((1 - abar_t) / abar_t)
                      (Karras et al. 2022; Euler, Euler ancestral, LMS; notation in euler.py)
Arrays are numpy arrays or torch tensors (``genrt.sampling.arrays``); the coefficients are Python floats.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from genrt.errors import ConfigError, InputError
from genrt.sampling.arrays import ops_of
from genrt.sampling.guidance import dynamic_threshold
from genrt.sampling.schedule import (
    NoiseSchedule,
    ScheduleConfig,
    inference_timesteps,
    karras_sigmas,
    sigma_to_timestep,
)


def check_model_output(model_output, x) -> None:
    """Refuse a model output (B, C, H, W) whose shape is not the sample's."""
    if tuple(model_output.shape) != tuple(x.shape):
        raise InputError(
            f"model_output has shape {tuple(model_output.shape)}, the sample {tuple(x.shape)}",
            fix="pass a model output of the sample's shape",
        )


def check_noise(noise, x, where: str) -> None:
    """Refuse missing noise, or noise not of the sample's shape (B, C, H, W); ``where`` names the step."""
    if noise is None or tuple(noise.shape) != tuple(x.shape):
        got = None if noise is None else tuple(noise.shape)
        raise InputError(f"{where} got noise {got}", fix=f"pass noise of shape {tuple(x.shape)}")


def karras_denoised(model_output, x, sigma: float, prediction_type: str):
    """D(x; sigma): the x_0 prediction in the sigma parameterisation (Karras table 1)."""
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return x / (sigma**2 + 1) - (sigma / (sigma**2 + 1) ** 0.5) * model_output
    return model_output


def refuse_fields(config: ScheduleConfig, sampler: str, **defaults) -> None:
    """Refuse ScheduleConfig fields ``sampler`` does not read when they differ from ``defaults``."""
    for field, default in defaults.items():
        if getattr(config, field) != default:
            raise ConfigError(
                f"sampler {sampler!r} does not implement {field}={getattr(config, field)!r}",
                fix=f"use {field}={default!r} or another sampler",
            )


class Sampler(ABC):
    """The walk over the timesteps of ``set_timesteps``; a subclass writes ``_step`` (and its timesteps)."""

    needs_noise = False  # whether step() takes fresh noise
    timestep_rule = "discrete"  # see genrt.sampling.schedule.inference_timesteps

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.schedule = NoiseSchedule(config)
        self.num_steps = 0  # n of set_timesteps()
        self._timesteps: list = []  # visited timesteps, descending (ints, or floats for the sigma samplers)
        self._index = 0  # position in _timesteps of the current timestep
        self._history: list = []  # multistep samplers: per-step values of the steps since the start or a skip
        self._steps_taken = 0  # steps since set_timesteps() or the last skip

    def set_timesteps(self, num_steps: int) -> np.ndarray:
        """The timesteps to visit, descending (see ``timestep_rule``); resets the sampler."""
        timesteps = self._make_timesteps(num_steps)
        self.num_steps = int(num_steps)
        self._timesteps = timesteps.tolist()
        self._index = 0
        self._restart()
        return timesteps

    def _make_timesteps(self, num_steps: int) -> np.ndarray:
        return inference_timesteps(self.config, num_steps, self.timestep_rule)

    def _restart(self) -> None:
        """Forget the multistep history (a new run, or a skip of timesteps)."""
        self._history = []
        self._steps_taken = 0

    def _seek(self, t) -> None:
        """Move to timestep ``t``: the current one, or a later one of the schedule (img2img starts part-way)."""
        remaining = self._timesteps[self._index :]
        value = float(t)
        if value not in remaining:
            expected = remaining[0] if remaining else "none (finished)"
            raise InputError(
                f"got timestep {t} but the current timestep is {expected}",
                fix="call set_timesteps() first, then scale_model_input()/step() once per timestep in order",
            )
        skipped = remaining.index(value)
        # PNDM's schedule repeats a timestep: passing over that repeat right after visiting it is no skip (a
        # tail started at the repeat, as diffusers' img2img slices it, goes on with its history)
        repeat = self._index > 0 and all(p == self._timesteps[self._index - 1] for p in remaining[:skipped])
        if skipped and not repeat:
            self._restart()
        self._index += skipped

    def scale_model_input(self, x, t):
        """The network input at timestep ``t`` (the current one, or a later one)."""
        self._seek(t)
        return self._scale(x)

    def _scale(self, x):
        """x_t goes to the network unchanged (the sigma samplers scale)."""
        return x

    def step(self, model_output, t, x, noise=None):
        """x (B, C, H, W) at timestep ``t``, model_output (B, C, H, W), noise (B, C, H, W) or None -> the next x."""
        self._seek(t)
        x_next = self._step(model_output, x, noise)
        self._index += 1
        self._steps_taken += 1
        return x_next

    @abstractmethod
    def _step(self, model_output, x, noise):
        """The update from the current timestep (``self._index``) to the next."""

    @property
    def _t(self):
        """The current timestep."""
        return self._timesteps[self._index]


class TimestepSampler(Sampler):
    """Samplers on x_t: initial noise N(0, I), img2img ``add_noise`` on the forward process."""

    init_noise_sigma = 1.0

    def add_noise(self, x0, noise, t):
        """The state at timestep ``t`` for a clean x_0 (img2img): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        return self.schedule.add_noise(x0, noise, int(t))

    def _alpha_bar(self, t: int) -> float:
        """abar_t as a float; before timestep 0 (the last step): 1, or abar_0 without set_alpha_to_one."""
        if t >= 0:
            return float(self.schedule.alphas_cumprod[t])
        return 1.0 if self.config.set_alpha_to_one else float(self.schedule.alphas_cumprod[0])


class SigmaSampler(Sampler):
    """Samplers on x = x_t / sqrt(abar_t) at the noise levels ``sigmas`` (one per timestep, then the final one,
    0): sigmas interpolated at the timesteps, or the Karras ramp with the timesteps interpolated back."""

    timestep_rule = "sigma"
    karras_range = "spaced"  # Karras ramp between the spaced sigmas ("spaced") or the training table ("table")

    def __init__(self, config: ScheduleConfig):
        super().__init__(config)
        self.sigmas: list[float] = []  # from set_timesteps(): n + 1 noise levels

    def _make_timesteps(self, num_steps: int) -> np.ndarray:
        timesteps = super()._make_timesteps(num_steps)
        table = self.schedule.sigma_table()  # (T,)
        sigmas = np.interp(timesteps.astype(np.float64), np.arange(len(table)), table)
        if self.config.use_karras_sigmas:
            low, high = (sigmas[-1], sigmas[0]) if self.karras_range == "spaced" else (table[0], table[-1])
            sigmas = karras_sigmas(float(low), float(high), int(num_steps))
            timesteps = self._karras_timesteps(sigma_to_timestep(sigmas, np.log(table)))
        final = float(table[0]) if self.config.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = sigmas.tolist() + [final]
        return timesteps

    def _karras_timesteps(self, timesteps: np.ndarray) -> np.ndarray:
        """The fractional timesteps of the Karras sigmas, as the sampler's timesteps."""
        return timesteps.astype(np.float32)

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial x: sigma_max (linspace, trailing) or sqrt(sigma_max^2 + 1)
        (leading), as diffusers' sigma schedulers."""
        if not self.sigmas:
            raise InputError("init_noise_sigma is read before set_timesteps()", fix="call set_timesteps(num_steps) first")
        largest = max(self.sigmas)
        return largest if self.config.timestep_spacing in ("linspace", "trailing") else (largest**2 + 1) ** 0.5

    def _scale(self, x):
        """x -> x / sqrt(sigma^2 + 1) = x_t, the input the network was trained on."""
        return x / (self.sigmas[self._index] ** 2 + 1) ** 0.5

    def add_noise(self, x0, noise, t):
        """The sampler's state at timestep ``t`` of the schedule for a clean x_0 (img2img): x_0 + sigma_t noise."""
        return x0 + self._sigma_at(t) * noise

    def _sigma_at(self, t) -> float:
        if float(t) not in self._timesteps:
            raise InputError(f"timestep {t} is not in the schedule {self._timesteps[:3]}...",
                             fix="call set_timesteps() first and pass one of its timesteps")
        return self.sigmas[self._timesteps.index(float(t))]

    def _denoised(self, model_output, x):
        """(sigma, sigma_next, D(x; sigma)) of the current step."""
        check_model_output(model_output, x)
        sigma, sigma_next = self.sigmas[self._index], self.sigmas[self._index + 1]
        return sigma, sigma_next, karras_denoised(model_output, x, sigma, self.config.prediction_type)


def clip_prediction(x0, config: ScheduleConfig, percentile: float | None, max_value: float | None):
    """x_0 dynamic-thresholded (``percentile`` given, Imagen), else clamped to +-clip_sample_range
    (``config.clip_sample``), else unchanged, as diffusers' DDPM / DDIM (thresholding wins over clipping)."""
    if percentile is not None:
        return dynamic_threshold(x0, percentile, max_value)
    if config.clip_sample:
        return ops_of(x0).clip(x0, -config.clip_sample_range, config.clip_sample_range)
    return x0
