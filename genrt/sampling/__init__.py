"""genrt.sampling: noise schedules, samplers and guidance written once, for numpy arrays (the runtime) and
torch tensors (the SDK) alike; it never imports torch.

Every sampler follows diffusers' scheduler of the same algorithm step for step (timesteps, sigmas, updates);
``SchedulerConfig`` reads a diffusers ``scheduler_config.json`` and resolves it for any sampler as diffusers'
``from_config`` does. Protocol and names: docs/contracts.md.
"""

from genrt.sampling.ddim import DDIMSampler
from genrt.sampling.ddpm import DDPMSampler
from genrt.sampling.diffusers_config import DIFFUSERS_CLASSES, ResolvedScheduler, SchedulerConfig, describe_scheduler
from genrt.sampling.dpmpp_2m import DPMSolverPP2MSampler
from genrt.sampling.euler import EulerSampler
from genrt.sampling.euler_ancestral import EulerAncestralSampler
from genrt.sampling.guidance import classifier_free_guidance, dynamic_threshold
from genrt.sampling.lms import LMSSampler
from genrt.sampling.pndm import PNDMSampler
from genrt.sampling.samplers import SAMPLERS, make_sampler
from genrt.sampling.schedule import (
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
    "DIFFUSERS_CLASSES",
    "DPMSolverPP2MSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "LMSSampler",
    "NoiseSchedule",
    "PNDMSampler",
    "ResolvedScheduler",
    "SAMPLERS",
    "SD1_SCHEDULE",
    "SD2_V_SCHEDULE",
    "ScheduleConfig",
    "SchedulerConfig",
    "classifier_free_guidance",
    "describe_scheduler",
    "dynamic_threshold",
    "make_sampler",
]
