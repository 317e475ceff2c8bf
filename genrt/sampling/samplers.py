"""Samplers by name: ``make_sampler("ddim", config, eta=0.0)``."""

from __future__ import annotations

import inspect

from genrt.errors import ConfigError
from genrt.sampling.ddim import DDIMSampler
from genrt.sampling.ddpm import DDPMSampler
from genrt.sampling.dpmpp_2m import DPMSolverPP2MSampler
from genrt.sampling.euler import EulerSampler
from genrt.sampling.euler_ancestral import EulerAncestralSampler
from genrt.sampling.lms import LMSSampler
from genrt.sampling.pndm import PNDMSampler
from genrt.sampling.schedule import ScheduleConfig

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "pndm": PNDMSampler,
    "dpmpp_2m": DPMSolverPP2MSampler,
    "euler": EulerSampler,
    "euler_ancestral": EulerAncestralSampler,
    "lms": LMSSampler,
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
