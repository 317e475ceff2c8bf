"""Samplers by name: ``make_sampler("ddim", config, eta=0.0)``. Mirror of ``genrt.sdk.diffusion.samplers``."""

from __future__ import annotations

import inspect

from genrt.errors import ConfigError
from genrt.runtime.schedulers.ddim import DDIMSampler
from genrt.runtime.schedulers.ddpm import DDPMSampler
from genrt.runtime.schedulers.dpmpp_2m import DPMSolverPP2MSampler
from genrt.runtime.schedulers.euler import EulerSampler
from genrt.runtime.schedulers.euler_ancestral import EulerAncestralSampler
from genrt.runtime.schedulers.schedule import ScheduleConfig

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "dpmpp_2m": DPMSolverPP2MSampler,
    "euler": EulerSampler,
    "euler_ancestral": EulerAncestralSampler,
}


def make_sampler(name: str, config: ScheduleConfig | dict, **options):
    """A fresh sampler; ``config`` may be the manifest's dict. ``options`` go to the sampler's constructor
    (``eta``, ``dynamic_threshold_percentile``, ...)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}", fix=f"use one of {', '.join(SAMPLERS)}")
    if isinstance(config, dict):
        config = ScheduleConfig.from_dict(config)
    accepted = [p for p in inspect.signature(SAMPLERS[name]).parameters if p != "config"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"sampler {name!r} does not take option(s) {', '.join(unknown)}",
            fix=f"pass only {', '.join(accepted) or 'no options'}",
        )
    return SAMPLERS[name](config, **options)
