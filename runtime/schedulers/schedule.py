"""The forward (noising) process in numpy: betas, alphas_cumprod, timestep spacing and the conversions
between the three things a network can predict. Mirror of ``genrt.sdk.diffusion.schedule`` (no torch).

Notation (Ho et al. 2020, "DDPM"): ``beta_t`` the per-step noise variance, ``alpha_t = 1 - beta_t``,
``abar_t = prod_{s <= t} alpha_s`` (``alphas_cumprod``). The forward process is
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``eps ~ N(0, I)``. The velocity of Salimans &
Ho 2022 is ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``. The schedule is computed in float64;
arrays passed in keep their dtype (float32 or float64).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from genrt.errors import ConfigError, InputError

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "learned_range")
# Nichol & Dhariwal 2021, eq. (17): offset s of the cosine schedule and the cap on beta_t.
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999


@dataclass(frozen=True)
class ScheduleConfig:
    """How a model was trained to be noised; the manifest stores it as a dict under ``pipeline.scheduler``."""

    num_train_timesteps: int = 1000  # T: number of discrete noise levels seen in training
    beta_schedule: str = "linear"  # "linear" | "scaled_linear" (linear in sqrt(beta)) | "cosine" (Nichol & Dhariwal)
    beta_start: float = 0.0001  # beta_0 of the linear schedules (unused by "cosine")
    beta_end: float = 0.02  # beta_{T-1} of the linear schedules (unused by "cosine")
    prediction_type: str = "epsilon"  # what the network outputs: "epsilon" | "v_prediction" | "sample" (x_0)
    timestep_spacing: str = "leading"  # how inference timesteps are picked, Lin et al. 2023 table 2
    steps_offset: int = 0  # added to every "leading" timestep (Stable Diffusion uses 1)
    variance_type: str = "fixed_small"  # DDPM variance: "fixed_small" (posterior) | "learned_range" (2x channels)

    def __post_init__(self):
        for field, allowed in (
            ("beta_schedule", BETA_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("timestep_spacing", TIMESTEP_SPACINGS),
            ("variance_type", VARIANCE_TYPES),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(f"ScheduleConfig.{field} is {value!r}", fix=f"use one of {', '.join(allowed)}")
        if self.num_train_timesteps < 1:
            raise ConfigError(
                f"ScheduleConfig.num_train_timesteps is {self.num_train_timesteps}", fix="use a positive count"
            )
        if self.beta_schedule != "cosine" and not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(
                f"ScheduleConfig betas {self.beta_start}..{self.beta_end} are not increasing within (0, 1)",
                fix="pass 0 < beta_start <= beta_end < 1",
            )

    @classmethod
    def from_dict(cls, fields: dict) -> "ScheduleConfig":
        """The config a manifest stored with ``dataclasses.asdict``; unknown keys are refused."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"scheduler config has unknown field(s) {', '.join(unknown)}",
                fix=f"use only {', '.join(sorted(known))} (or upgrade genrt)",
            )
        return cls(**fields)

    def replace(self, **changes) -> "ScheduleConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def make_betas(config: ScheduleConfig) -> np.ndarray:
    """beta_t for t = 0..T-1: (T,) float64."""
    steps = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return np.linspace(config.beta_start, config.beta_end, steps, dtype=np.float64)
    if config.beta_schedule == "scaled_linear":
        return np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=np.float64) ** 2

    # cosine: abar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, beta_t = 1 - abar(t+1)/abar(t)
    def f(u: float) -> float:
        return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return np.array([min(1 - f((i + 1) / steps) / f(i / steps), COSINE_MAX_BETA) for i in range(steps)])


def inference_timesteps(config: ScheduleConfig, num_steps: int) -> list[int]:
    """The ``num_steps`` training timesteps a sampler visits, descending (Lin et al. 2023, table 2).

    leading:  ``(T // n) * [n-1, ..., 1, 0] + steps_offset``
    trailing: ``round(T - i * T / n) - 1`` for i = 0..n-1 (always starts at T - 1)
    linspace: ``round(linspace(0, T - 1, n))`` reversed
    """
    steps = config.num_train_timesteps
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= steps:
        raise InputError(f"num_steps is {num_steps!r}", fix=f"pass an integer between 1 and {steps}")
    if config.timestep_spacing == "leading":
        timesteps = np.arange(num_steps)[::-1] * (steps // num_steps) + config.steps_offset
    elif config.timestep_spacing == "trailing":
        timesteps = np.round(steps - np.arange(num_steps) * (steps / num_steps)) - 1
    else:
        timesteps = np.linspace(0, steps - 1, num_steps).round()[::-1]
    timesteps = [int(t) for t in timesteps]
    if timesteps[0] >= steps:
        raise InputError(
            f"{num_steps} leading steps with steps_offset {config.steps_offset} reach timestep {timesteps[0]} >= {steps}",
            fix="use fewer steps or timestep_spacing='trailing'",
        )
    return timesteps


def x0_from_output(model_output, x_t, alpha_bar, prediction_type: str):
    """Predicted x_0 from a network output; ``alpha_bar`` is a float or broadcasts against x_t."""
    if prediction_type == "epsilon":  # x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), DDPM eq. (15)
        return (x_t - (1 - alpha_bar) ** 0.5 * model_output) / alpha_bar**0.5
    if prediction_type == "v_prediction":  # x_0 = sqrt(abar) x_t - sqrt(1 - abar) v
        return alpha_bar**0.5 * x_t - (1 - alpha_bar) ** 0.5 * model_output
    return model_output


def epsilon_from_output(model_output, x_t, alpha_bar, prediction_type: str):
    """Predicted eps from a network output; ``alpha_bar`` is a float or broadcasts against x_t."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":  # eps = sqrt(abar) v + sqrt(1 - abar) x_t
        return alpha_bar**0.5 * model_output + (1 - alpha_bar) ** 0.5 * x_t
    return (x_t - alpha_bar**0.5 * model_output) / (1 - alpha_bar) ** 0.5


class NoiseSchedule:
    """The forward process of a :class:`ScheduleConfig`, for img2img-style noising.

    Methods take a per-sample timestep ``t``: an int or an integer array (B,), and arrays (B, C, H, W)
    (any number of trailing dims); results keep the dtype of ``x0`` / ``x_t``.
    """

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.betas = make_betas(config)  # (T,) float64
        self.alphas = 1.0 - self.betas  # (T,)
        self.alphas_cumprod = np.cumprod(self.alphas)  # (T,) abar_t

    def timesteps(self, num_steps: int) -> list[int]:
        """Descending inference timesteps, see :func:`inference_timesteps`."""
        return inference_timesteps(self.config, num_steps)

    def alpha_bar(self, t, like: np.ndarray) -> np.ndarray:
        """abar_t gathered per sample and shaped (B, 1, ..., 1) to broadcast against ``like`` (B, ...)."""
        t = np.asarray(t)
        if t.dtype.kind not in "iu":
            raise InputError(f"timesteps have dtype {t.dtype}", fix="pass integer timesteps")
        if t.size and (int(t.min()) < 0 or int(t.max()) >= self.config.num_train_timesteps):
            raise InputError(
                f"timesteps span {int(t.min())}..{int(t.max())}",
                fix=f"pass timesteps within 0..{self.config.num_train_timesteps - 1}",
            )
        alpha_bar = self.alphas_cumprod[t].astype(like.dtype)
        return alpha_bar.reshape(alpha_bar.shape + (1,) * (like.ndim - alpha_bar.ndim))

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: (B, ...) -> (B, ...)."""
        alpha_bar = self.alpha_bar(t, x0)
        return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise

    def v_target(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0: (B, ...) -> (B, ...)."""
        alpha_bar = self.alpha_bar(t, x0)
        return alpha_bar**0.5 * noise - (1 - alpha_bar) ** 0.5 * x0

    def predict_x0(self, model_output: np.ndarray, x_t: np.ndarray, t) -> np.ndarray:
        """x_0 implied by a network output at x_t: (B, ...) -> (B, ...)."""
        return x0_from_output(model_output, x_t, self.alpha_bar(t, x_t), self.config.prediction_type)

    def predict_epsilon(self, model_output: np.ndarray, x_t: np.ndarray, t) -> np.ndarray:
        """eps implied by a network output at x_t: (B, ...) -> (B, ...)."""
        return epsilon_from_output(model_output, x_t, self.alpha_bar(t, x_t), self.config.prediction_type)
