"""genrt.runtime.schedulers: noise schedules, samplers and guidance in numpy (never torch).

The same names and protocol as ``genrt.sdk.diffusion``; given the same noise arrays, both produce the
same numbers (float64 agreement to ~1e-12). The manifest stores the schedule as a dict:
``make_sampler("euler", manifest.pipeline["scheduler"])`` or ``ScheduleConfig.from_dict(...)``.
"""

from genrt.runtime.schedulers.ddim import DDIMSampler
from genrt.runtime.schedulers.ddpm import DDPMSampler
from genrt.runtime.schedulers.dpmpp_2m import DPMSolverPP2MSampler
from genrt.runtime.schedulers.euler import EulerSampler
from genrt.runtime.schedulers.euler_ancestral import EulerAncestralSampler
from genrt.runtime.schedulers.guidance import classifier_free_guidance, dynamic_threshold
from genrt.runtime.schedulers.samplers import SAMPLERS, make_sampler
from genrt.runtime.schedulers.schedule import NoiseSchedule, ScheduleConfig

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPP2MSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "NoiseSchedule",
    "SAMPLERS",
    "ScheduleConfig",
    "classifier_free_guidance",
    "dynamic_threshold",
    "make_sampler",
]
