"""The forward (noising) process every sampler shares: betas, alphas_cumprod, the inference timesteps and
sigmas, and the conversions between the three things a network can predict.

Notation (Ho et al. 2020, "DDPM"): ``beta_t`` the per-step noise variance, ``alpha_t = 1 - beta_t``,
``abar_t = prod_{s <= t} alpha_s`` (``alphas_cumprod``). The forward process is
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``eps ~ N(0, I)``. The velocity of Salimans &
Ho 2022 ("progressive distillation") is ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``. The noise level of
the variance-exploding view (Karras et al. 2022) is ``sigma_t = sqrt((1 - abar_t) / abar_t)``.

The schedule is computed in float64 with numpy (diffusers computes it in float32: its sigmas are these
rounded to float32, within a few float32 ulps); arrays passed in keep their dtype.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from genrt.errors import ConfigError, InputError
from genrt.sampling.arrays import ops_of

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
# Nichol & Dhariwal 2021, eq. (17): offset s of the cosine schedule and the cap on beta_t.
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999
# abar of the last training timestep of a zero-terminal-SNR schedule for the sigma samplers (diffusers: 2^-24),
# so that sigma_max stays finite.
ZERO_SNR_ALPHA_BAR = 2.0**-24
# Karras et al. 2022, eq. (5): the exponent rho of the sigma ramp.
KARRAS_RHO = 7.0


@dataclass(frozen=True)
class ScheduleConfig:
    """How a model was trained to be noised and how a sampler walks back; field names are diffusers'.
    Serialised with ``dataclasses.asdict`` into the manifest (``settings.scheduler``)."""

    num_train_timesteps: int = 1000  # T: number of discrete noise levels seen in training
    beta_schedule: str = "linear"  # "linear" | "scaled_linear" (linear in sqrt(beta)) | "cosine" (Nichol & Dhariwal)
    beta_start: float = 0.0001  # beta_0 of the linear schedules (unused by "cosine")
    beta_end: float = 0.02  # beta_{T-1} of the linear schedules (unused by "cosine")
    trained_betas: tuple[float, ...] | None = None  # explicit betas (T,), replacing beta_schedule
    rescale_betas_zero_snr: bool = False  # rescale betas to zero terminal SNR (Lin et al. 2023, algorithm 1)
    prediction_type: str = "epsilon"  # what the network outputs: "epsilon" | "v_prediction" | "sample" (x_0)
    timestep_spacing: str = "leading"  # how inference timesteps are picked, Lin et al. 2023 table 2
    steps_offset: int = 0  # added to every "leading" timestep (Stable Diffusion uses 1)
    variance_type: str = "fixed_small"  # DDPM: "fixed_small" (posterior) | "fixed_large" (beta) | "learned_range"
    set_alpha_to_one: bool = True  # DDIM / PNDM: abar after the last step is 1 (False: abar_0)
    clip_sample: bool = False  # DDIM / DDPM: clamp the predicted x_0 to +-clip_sample_range
    clip_sample_range: float = 1.0  # bound of clip_sample
    use_karras_sigmas: bool = False  # Euler / LMS / DPM-Solver++: the sigma ramp of Karras et al. eq. (5)
    final_sigmas_type: str = "zero"  # Euler / DPM-Solver++: sigma after the last step, "zero" or "sigma_min"
    lower_order_final: bool = True  # DPM-Solver++: first-order last step below 15 steps

    def __post_init__(self):
        for field, allowed in (
            ("beta_schedule", BETA_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("timestep_spacing", TIMESTEP_SPACINGS),
            ("variance_type", VARIANCE_TYPES),
            ("final_sigmas_type", FINAL_SIGMAS_TYPES),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(f"ScheduleConfig.{field} is {value!r}", fix=f"use one of {', '.join(allowed)}")
        if self.num_train_timesteps < 1:
            raise ConfigError(
                f"ScheduleConfig.num_train_timesteps is {self.num_train_timesteps}", fix="use a positive count"
            )
        if self.trained_betas is not None:
            if len(self.trained_betas) != self.num_train_timesteps or not all(
                0.0 < b < 1.0 for b in self.trained_betas
            ):
                raise ConfigError(
                    f"ScheduleConfig.trained_betas has {len(self.trained_betas)} values for "
                    f"{self.num_train_timesteps} timesteps",
                    fix="pass num_train_timesteps betas within (0, 1)",
                )
        elif self.beta_schedule != "cosine" and not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(
                f"ScheduleConfig betas {self.beta_start}..{self.beta_end} are not increasing within (0, 1)",
                fix="pass 0 < beta_start <= beta_end < 1",
            )
        if self.clip_sample_range <= 0:
            raise ConfigError(f"ScheduleConfig.clip_sample_range is {self.clip_sample_range}", fix="pass a bound > 0")

    def replace(self, **changes) -> "ScheduleConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

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
        values = dict(fields)
        if values.get("trained_betas") is not None:
            values["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
        return cls(**values)


# Stable Diffusion 1.x (CompVis/runwayml): scaled-linear betas, epsilon prediction.
SD1_SCHEDULE = ScheduleConfig(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", steps_offset=1
)
# Stable Diffusion 2.x 768-v models: the SD1 schedule with v-prediction.
SD2_V_SCHEDULE = SD1_SCHEDULE.replace(prediction_type="v_prediction")
# DeepFloyd IF (stage I and II): cosine schedule, epsilon plus a learned variance interpolation.
DEEPFLOYD_IF_SCHEDULE = ScheduleConfig(beta_schedule="cosine", variance_type="learned_range")


def make_betas(config: ScheduleConfig) -> np.ndarray:
    """beta_t for t = 0..T-1: (T,) float64."""
    steps = config.num_train_timesteps
    if config.trained_betas is not None:
        betas = np.array(config.trained_betas, dtype=np.float64)
    elif config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, steps, dtype=np.float64)
    elif config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=np.float64) ** 2
    else:
        # cosine: abar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, beta_t = 1 - abar(t+1)/abar(t)
        def f(u: float) -> float:
            return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        betas = np.array([min(1 - f((i + 1) / steps) / f(i / steps), COSINE_MAX_BETA) for i in range(steps)])
    return rescale_zero_terminal_snr(betas) if config.rescale_betas_zero_snr else betas


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, algorithm 1: shift and scale sqrt(abar) so that abar_{T-1} = 0, abar_0 unchanged."""
    root = np.sqrt(np.cumprod(1.0 - betas))  # sqrt(abar_t)
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def inference_timesteps(config: ScheduleConfig, num_steps: int, rule: str = "discrete") -> np.ndarray:
    """The timesteps a sampler visits, descending, as diffusers' scheduler classes pick them (Lin et al.
    2023, table 2, with each class's rounding). ``rule``:

    discrete (DDPM, DDIM) int64 (n,): leading ``(T // n) * [n-1..0] + steps_offset``,
        trailing ``round(arange(T, 0, -T/n)) - 1``, linspace ``round(linspace(0, T - 1, n))`` reversed
    multistep (DPM-Solver++) int64 (n,): the same on n + 1 points, dropping the last (0)
    plms (PNDM) int64 (n + 1,): the discrete ones with the second repeated (PLMS's warm-up step)
    sigma (Euler, Euler ancestral, LMS) float32 (n,): linspace keeps fractional timesteps
    """
    steps, most = config.num_train_timesteps, max_inference_steps(config, rule)
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= most:
        raise InputError(f"num_steps is {num_steps!r}", fix=f"pass an integer between 1 and {most}")
    n, offset, spacing = int(num_steps), config.steps_offset, config.timestep_spacing
    if rule == "multistep":
        if spacing == "linspace":
            timesteps = np.linspace(0, steps - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        elif spacing == "leading":
            timesteps = (np.arange(0, n + 1) * (steps // (n + 1))).round()[::-1][:-1].astype(np.int64) + offset
        else:
            timesteps = np.arange(steps, 0, -steps / n).round().astype(np.int64) - 1
    else:
        if spacing == "linspace":
            timesteps = np.linspace(0, steps - 1, n, dtype=np.float32 if rule == "sigma" else np.float64)[::-1]
            timesteps = timesteps if rule == "sigma" else timesteps.round().astype(np.int64)
        elif spacing == "leading":
            timesteps = (np.arange(0, n) * (steps // n)).round()[::-1].astype(np.int64) + offset
        else:
            timesteps = np.round(np.arange(steps, 0, -steps / n)).astype(np.int64) - 1
        if rule == "sigma":
            timesteps = timesteps.astype(np.float32)
        elif rule == "plms":
            ascending = timesteps[::-1]
            timesteps = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
    return timesteps.copy()


def _largest_timestep(config: ScheduleConfig, num_steps: int, rule: str) -> int:
    """The first (largest) timestep :func:`inference_timesteps` picks for ``num_steps``."""
    steps, n = config.num_train_timesteps, num_steps
    if config.timestep_spacing != "leading":
        return steps - 1
    if rule == "multistep":  # n + 1 leading points, the first kept
        return n * (steps // (n + 1)) + config.steps_offset
    return (n - 1) * (steps // n) + config.steps_offset


def max_inference_steps(config: ScheduleConfig, rule: str = "discrete") -> int:
    """The most steps whose timesteps stay below num_train_timesteps (leading spacing with a
    steps_offset cannot take all of them: 1000 leading steps with offset 1 would start at t = 1000)."""
    steps = config.num_train_timesteps
    return next(n for n in range(steps, 0, -1) if _largest_timestep(config, n, rule) < steps)


def sigma_to_timestep(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional timestep of each noise level: linear interpolation of log sigma over the table (T,)."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    distances = log_sigma - log_sigmas[:, np.newaxis]  # (T, n)
    low = np.cumsum(distances >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    weight = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - weight) * low + weight * (low + 1)


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int) -> np.ndarray:
    """Karras et al. 2022, eq. (5): (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    ramp = np.linspace(0, 1, num_steps)
    low, high = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return (high + ramp * (low - high)) ** KARRAS_RHO


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
    """The forward process of a :class:`ScheduleConfig`, for training and for img2img-style noising.

    ``betas``, ``alphas``, ``alphas_cumprod``: (T,) float64 numpy arrays. Methods take a per-sample timestep
    ``t``: an int or an integer array / tensor (B,), and arrays or tensors (B, C, H, W) (any number of
    trailing dims); results keep the type and dtype of ``x0`` / ``x_t``.
    """

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.betas = make_betas(config)  # (T,) float64
        self.alphas = 1.0 - self.betas  # (T,)
        self.alphas_cumprod = np.cumprod(self.alphas)  # (T,) abar_t

    def sigma_table(self) -> np.ndarray:
        """sigma_t for t = 0..T-1, (T,) float64 (a zero-terminal-SNR schedule ends at abar = 2^-24)."""
        alpha_bar = self.alphas_cumprod.copy()
        if self.config.rescale_betas_zero_snr:
            alpha_bar[-1] = ZERO_SNR_ALPHA_BAR
        return np.sqrt((1 - alpha_bar) / alpha_bar)

    def alpha_bar(self, t, like):
        """abar_t gathered per sample and shaped (B, 1, ..., 1) to broadcast against ``like`` (B, ...)."""
        ops = ops_of(like)
        gathered = ops.gather(self.alphas_cumprod, t, like)  # (B,) or ()
        return gathered.reshape(tuple(gathered.shape) + (1,) * (ops.ndim(like) - ops.ndim(gathered)))

    def add_noise(self, x0, noise, t):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: (B, ...) -> (B, ...)."""
        alpha_bar = self.alpha_bar(t, x0)
        return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise

    def v_target(self, x0, noise, t):
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0: (B, ...) -> (B, ...)."""
        alpha_bar = self.alpha_bar(t, x0)
        return alpha_bar**0.5 * noise - (1 - alpha_bar) ** 0.5 * x0

    def training_target(self, x0, noise, t):
        """What the network should output for x_t = add_noise(x0, noise, t) under the configured prediction_type."""
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "v_prediction":
            return self.v_target(x0, noise, t)
        return x0

    def predict_x0(self, model_output, x_t, t):
        """x_0 implied by a network output at x_t: (B, ...) -> (B, ...)."""
        return x0_from_output(model_output, x_t, self.alpha_bar(t, x_t), self.config.prediction_type)

    def predict_epsilon(self, model_output, x_t, t):
        """eps implied by a network output at x_t: (B, ...) -> (B, ...)."""
        return epsilon_from_output(model_output, x_t, self.alpha_bar(t, x_t), self.config.prediction_type)
