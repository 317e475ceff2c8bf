"""genrt.sdk.diffusion: noise schedules, samplers, guidance and the reference sampling loop (torch).

The numpy mirror with the same names is ``genrt.runtime.schedulers``.
"""

from genrt.sdk.diffusion.ddim import DDIMSampler
from genrt.sdk.diffusion.ddpm import DDPMSampler
from genrt.sdk.diffusion.dpmpp_2m import DPMSolverPP2MSampler
from genrt.sdk.diffusion.euler import EulerSampler
from genrt.sdk.diffusion.euler_ancestral import EulerAncestralSampler
from genrt.sdk.diffusion.guidance import classifier_free_guidance, dynamic_threshold
from genrt.sdk.diffusion.sample import sample
from genrt.sdk.diffusion.samplers import SAMPLERS, make_sampler
from genrt.sdk.diffusion.schedule import (
    DEEPFLOYD_IF_SCHEDULE,
    SD1_SCHEDULE,
    SD2_V_SCHEDULE,
    NoiseSchedule,
    ScheduleConfig,
)

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DEEPFLOYD_IF_SCHEDULE",
    "DPMSolverPP2MSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "NoiseSchedule",
    "SAMPLERS",
    "SD1_SCHEDULE",
    "SD2_V_SCHEDULE",
    "ScheduleConfig",
    "classifier_free_guidance",
    "dynamic_threshold",
    "make_sampler",
    "sample",
]
