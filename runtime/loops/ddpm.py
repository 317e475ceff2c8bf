"""The guided DDPM loop of the Imagen cascade on the U-Net's device: guidance, x_0, dynamic thresholding and
the posterior step run as one step graph per image size (``step_graphs.ddpm_step_graph``), fed the U-Net's
[uncond; cond] output as a device tensor; the image comes to the host once, at the stage's end.

The per-step scalars (``DDPM_ROW``) come from the sampler's own schedule (``ddpm_rows``, float64). The
conditioning (text embeddings and mask, the augmented low-res image and its level), x_T and the guidance
scale are uploaded once per call; per step only the timesteps, the row and the step's noise go to the device.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from genrt.runtime.backends.base import Runner
from genrt.runtime.loops.step_graphs import DDPM_INPUTS
from genrt.runtime.loops.step_loop import StepEnd, StepLoop
from genrt.sampling.ddpm import MIN_VARIANCE, DDPMSampler


def ddpm_resident_capable(sampler) -> bool:
    """Whether ``sampler`` is the stock DDPM sampler with a step ``ddpm_step_graph`` computes (no clip_sample
    without thresholding, no fixed_large variance)."""
    return type(sampler) is DDPMSampler and sampler.config.variance_type != "fixed_large" and (
        not sampler.config.clip_sample or sampler.dynamic_threshold_percentile is not None)


def ddpm_rows(sampler: DDPMSampler, timesteps: Sequence[int]) -> np.ndarray:
    """(steps, 9) float64: the ``DDPM_ROW`` scalars of each step of ``sampler`` through ``timesteps``."""
    cumprod = sampler.schedule.alphas_cumprod
    prediction = sampler.config.prediction_type
    rows = []
    for index, t in enumerate(timesteps):
        prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        abar_t, abar_prev = float(cumprod[t]), (float(cumprod[prev]) if prev >= 0 else 1.0)
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t
        x0_terms = {"epsilon": (1.0, (1 - abar_t) ** 0.5, abar_t**0.5),
                    "v_prediction": (abar_t**0.5, (1 - abar_t) ** 0.5, 1.0), "sample": (0.0, -1.0, 1.0)}[prediction]
        posterior = max((1 - abar_prev) / (1 - abar_t) * beta_t, MIN_VARIANCE)
        rows.append(x0_terms + (abar_prev**0.5 * beta_t / (1 - abar_t), alpha_t**0.5 * (1 - abar_prev) / (1 - abar_t),
                                posterior**0.5, math.log(beta_t), math.log(posterior), float(t != 0)))
    return np.array(rows, dtype=np.float64)


class ResidentDDPM(StepLoop):
    """The guided DDPM loop of ``unet`` (inputs ``sample``, ``timestep`` and conditioning such as
    ``text_embeddings``, ``text_mask``, ``low_res``, ``noise_level``; output ``model_output`` (2B, C_out, H, W),
    [uncond; cond]) and ``step``, a runner of the stage's ``ddpm_step_graph`` on the same backend and device."""

    def __init__(self, unet: Runner, step: Runner):
        super().__init__(unet, step, DDPM_INPUTS)

    def __call__(self, x: np.ndarray, conditioning: dict[str, np.ndarray], timesteps: Sequence[int],
                 rows: np.ndarray, guidance: float, draw_noise: Callable[[], np.ndarray],
                 step_end: StepEnd | None = None) -> np.ndarray:
        """x (B, C, H, W) float32 x_T -> x_0 (B, C, H, W) float32. ``conditioning``: the U-Net's other inputs
        for 2B rows, uploaded once; ``rows``: ``ddpm_rows``; ``draw_noise``: the step's (B, C, H, W) noise,
        called once per step after its U-Net call (the host loop's order)."""
        x = np.asarray(x, dtype=np.float32)
        return self.run(x, np.concatenate([x, x]), conditioning, timesteps, rows, guidance, draw_noise, step_end)
