"""Samplers by name: ``make_sampler("ddim", config, eta=0.0)``."""

from __future__ import annotations

import inspect

from genrt.errors import ConfigError
from genrt.sdk.diffusion.ddim import DDIMSampler
from genrt.sdk.diffusion.ddpm import DDPMSampler
from genrt.sdk.diffusion.dpmpp_2m import DPMSolverPP2MSampler
from genrt.sdk.diffusion.euler import EulerSampler
from genrt.sdk.diffusion.euler_ancestral import EulerAncestralSampler
from genrt.sdk.diffusion.schedule import ScheduleConfig

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "dpmpp_2m": DPMSolverPP2MSampler,
    "euler": EulerSampler,
    "euler_ancestral": EulerAncestralSampler,
}


def make_sampler(name: str, config: ScheduleConfig, **options):
    """A fresh sampler; ``options`` go to its constructor (``eta``, ``dynamic_threshold_percentile``, ...)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}", fix=f"use one of {', '.join(SAMPLERS)}")
    accepted = [p for p in inspect.signature(SAMPLERS[name]).parameters if p != "config"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"sampler {name!r} does not take option(s) {', '.join(unknown)}",
            fix=f"pass only {', '.join(accepted) or 'no options'}",
        )
    return SAMPLERS[name](config, **options)
