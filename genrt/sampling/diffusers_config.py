"""A diffusers ``scheduler_config.json`` read as diffusers reads it, resolved to a genrt sampler.

The folder's ``_class_name`` names the default sampler. Resolving for a sampler follows diffusers'
``SamplerClass.from_config(folder_config)``: the keys the class's constructor takes come from the folder,
the others take that class's own defaults (so ``timestep_spacing`` missing from SD 1.5's PNDM config is
"leading" for PNDM / DDIM / DDPM and "linspace" for Euler / LMS / DPM-Solver++); keys the class does not take
are ignored, as are those a folder lists in ``_use_default_values``. A value genrt does not implement is
refused by name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from genrt.errors import ConfigError
from genrt.sampling.schedule import ScheduleConfig

# diffusers scheduler class -> genrt sampler name.
DIFFUSERS_CLASSES = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "PNDMScheduler": "pndm",
    "LMSDiscreteScheduler": "lms",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
}
CLASS_NAMES = {name: class_name for class_name, name in DIFFUSERS_CLASSES.items()}

# Constructor defaults of the classes (diffusers 0.42.1 signatures), every key that changes numbers.
_COMMON = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
               trained_betas=None, prediction_type="epsilon", steps_offset=0)
_THRESHOLDING = dict(thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)
_OTHER_SIGMAS = dict(use_exponential_sigmas=False, use_beta_sigmas=False)
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "ddpm": dict(_COMMON, **_THRESHOLDING, variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
                 timestep_spacing="leading", rescale_betas_zero_snr=False),
    "ddim": dict(_COMMON, **_THRESHOLDING, clip_sample=True, set_alpha_to_one=True, clip_sample_range=1.0,
                 timestep_spacing="leading", rescale_betas_zero_snr=False),
    "pndm": dict(_COMMON, skip_prk_steps=False, set_alpha_to_one=False, timestep_spacing="leading"),
    "lms": dict(_COMMON, **_OTHER_SIGMAS, use_karras_sigmas=False, timestep_spacing="linspace"),
    "euler": dict(_COMMON, **_OTHER_SIGMAS, interpolation_type="linear", use_karras_sigmas=False, sigma_min=None,
                  sigma_max=None, timestep_spacing="linspace", timestep_type="discrete",
                  rescale_betas_zero_snr=False, final_sigmas_type="zero"),
    "euler_ancestral": dict(_COMMON, timestep_spacing="linspace", rescale_betas_zero_snr=False),
    "dpmpp_2m": dict(_COMMON, **_THRESHOLDING, **_OTHER_SIGMAS, solver_order=2, algorithm_type="dpmsolver++",
                     solver_type="midpoint", lower_order_final=True, euler_at_final=False, use_karras_sigmas=False,
                     use_lu_lambdas=False, use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero",
                     lambda_min_clipped=-math.inf, variance_type=None, timestep_spacing="linspace",
                     rescale_betas_zero_snr=False, use_dynamic_shifting=False, time_shift_type="exponential"),
}
# Keys copied into ScheduleConfig as they are (validated there).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "prediction_type", "steps_offset",
                 "timestep_spacing", "clip_sample", "clip_sample_range", "set_alpha_to_one", "rescale_betas_zero_snr",
                 "use_karras_sigmas", "final_sigmas_type", "lower_order_final")
# Keys genrt reads but implements only at one value (their class default unless noted).
FIXED_KEYS = ("use_exponential_sigmas", "use_beta_sigmas", "interpolation_type", "sigma_min", "sigma_max",
              "timestep_type", "solver_order", "algorithm_type", "solver_type", "euler_at_final", "use_lu_lambdas",
              "use_flow_sigmas", "flow_shift", "lambda_min_clipped", "use_dynamic_shifting", "time_shift_type")
# diffusers beta_schedule -> ScheduleConfig.beta_schedule
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
# diffusers DDPM variance_type -> ScheduleConfig.variance_type ("fixed_small_log" has the same numbers)
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
                  "learned_range": "learned_range"}
# prediction types a diffusers class does not implement
UNSUPPORTED_PREDICTIONS = {"pndm": ("sample",), "euler_ancestral": ("sample",)}


@dataclass(frozen=True)
class ResolvedScheduler:
    """A sampler and its schedule as diffusers' class would run them: ``make_sampler(sampler, schedule, **options)``."""

    sampler: str  # genrt sampler name
    schedule: ScheduleConfig  # the resolved schedule
    options: Mapping[str, float] = field(default_factory=dict)  # constructor options (dynamic thresholding)



def describe_scheduler(sampler: str, schedule: ScheduleConfig) -> str:
    """One line for ``genrt export``: the sampler, the diffusers class it reproduces and the schedule's fields
    that differ from ScheduleConfig's defaults."""
    defaults = ScheduleConfig()
    changed = ", ".join(f"{f}={getattr(schedule, f)!r}" for f in schedule.__dataclass_fields__
                        if getattr(schedule, f) != getattr(defaults, f))
    return f"{sampler} ({CLASS_NAMES.get(sampler, 'no diffusers class')}): {changed or 'ScheduleConfig defaults'}"


@dataclass(frozen=True)
class SchedulerConfig:
    """The text of a diffusers ``scheduler_config.json``: its class and the keys it gives."""

    class_name: str | None  # ``_class_name``: the folder's scheduler class, None when absent
    fields: Mapping[str, Any]  # the other keys as given (private ``_`` keys dropped, ``_use_default_values`` applied)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "scheduler config") -> "SchedulerConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} is not a JSON object", fix="pass a diffusers scheduler_config.json")
        defaults = set(data.get("_use_default_values", ()))
        class_name = data.get("_class_name")
        fields = {k: v for k, v in data.items() if not k.startswith("_") and k not in defaults}
        return cls(class_name=class_name, fields=fields)

    @classmethod
    def from_file(cls, path: Path) -> "SchedulerConfig":
        """Read ``path`` (a scheduler_config.json)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not readable JSON ({exc})", fix="pass a diffusers scheduler_config.json") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        """The config as diffusers' JSON (``_class_name`` first), for the manifest."""
        head = {"_class_name": self.class_name} if self.class_name is not None else {}
        return {**head, **self.fields}

    @property
    def default_sampler(self) -> str:
        """The genrt sampler of the folder's class."""
        if self.class_name not in DIFFUSERS_CLASSES:
            raise ConfigError(
                f"scheduler class {self.class_name!r} is not implemented",
                fix=f"choose a sampler ({', '.join(CLASS_NAMES)}) or save the folder with one of "
                    f"{', '.join(DIFFUSERS_CLASSES)}",
            )
        return DIFFUSERS_CLASSES[self.class_name]

    def resolve(self, sampler: str | None = None) -> ResolvedScheduler:
        """The folder's config for ``sampler`` (default: the folder's class), as ``Class.from_config`` reads it."""
        name = sampler if sampler is not None else self.default_sampler
        if name not in CLASS_DEFAULTS:
            raise ConfigError(f"unknown sampler {name!r}", fix=f"use one of {', '.join(CLASS_DEFAULTS)}")
        values = {key: self.fields.get(key, default) for key, default in CLASS_DEFAULTS[name].items()}

        def refuse(key: str, allowed: str) -> ConfigError:
            return ConfigError(f"scheduler config {key}={values[key]!r} is not implemented for {CLASS_NAMES[name]}",
                               fix=f"use {allowed}, or choose another sampler")

        for key in FIXED_KEYS:
            if key in values and values[key] != CLASS_DEFAULTS[name][key]:
                raise refuse(key, repr(CLASS_DEFAULTS[name][key]))
        if name == "pndm" and values["skip_prk_steps"] is not True:
            raise refuse("skip_prk_steps", "true (PLMS only, as Stable Diffusion ships it)")
        if values["prediction_type"] in UNSUPPORTED_PREDICTIONS.get(name, ()):
            raise refuse("prediction_type", "epsilon or v_prediction")
        if values["beta_schedule"] not in BETA_SCHEDULES:
            raise refuse("beta_schedule", ", ".join(BETA_SCHEDULES))
        schedule = {key: values[key] for key in SCHEDULE_KEYS if key in values}
        schedule["beta_schedule"] = BETA_SCHEDULES[values["beta_schedule"]]
        if values["trained_betas"] is not None:
            schedule["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
        if name == "ddpm":
            if values["variance_type"] not in VARIANCE_TYPES:
                raise refuse("variance_type", ", ".join(VARIANCE_TYPES))
            schedule["variance_type"] = VARIANCE_TYPES[values["variance_type"]]
        elif values.get("variance_type") is not None:
            raise refuse("variance_type", "null")
        options = {}
        if values.get("thresholding"):
            if name not in ("ddpm", "ddim"):
                raise refuse("thresholding", "false")
            options = {"dynamic_threshold_percentile": float(values["dynamic_thresholding_ratio"]),
                       "dynamic_threshold_max": float(values["sample_max_value"])}
        return ResolvedScheduler(sampler=name, schedule=ScheduleConfig(**schedule), options=options)
