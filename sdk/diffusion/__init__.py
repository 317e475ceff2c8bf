"""genrt.sdk.diffusion: the reference sampling loop in torch (``sample``), with the schedules, samplers and
guidance of ``genrt.sampling`` (one implementation for torch tensors and numpy arrays)."""

from genrt.sampling import (
    DDIMSampler,
    DDPMSampler,
    DEEPFLOYD_IF_SCHEDULE,
    DPMSolverPP2MSampler,
    EulerAncestralSampler,
    EulerSampler,
    LMSSampler,
    NoiseSchedule,
    PNDMSampler,
    SAMPLERS,
    SD1_SCHEDULE,
    SD2_V_SCHEDULE,
    ScheduleConfig,
    classifier_free_guidance,
    dynamic_threshold,
    make_sampler,
)
from genrt.sdk.diffusion.sample import sample

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DEEPFLOYD_IF_SCHEDULE",
    "DPMSolverPP2MSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "LMSSampler",
    "NoiseSchedule",
    "PNDMSampler",
    "SAMPLERS",
    "SD1_SCHEDULE",
    "SD2_V_SCHEDULE",
    "ScheduleConfig",
    "classifier_free_guidance",
    "dynamic_threshold",
    "make_sampler",
    "sample",
]
