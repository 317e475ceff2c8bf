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

from genrt.runtime.backends.base import Runner, numpy_dtype
from genrt.runtime.loops.step_graphs import DDPM_INPUTS, STEP_OUTPUTS
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


class ResidentDDPM:
    """The guided DDPM loop of ``unet`` (inputs ``sample``, ``timestep`` and conditioning such as
    ``text_embeddings``, ``text_mask``, ``low_res``, ``noise_level``; output ``model_output`` (2B, C_out, H, W),
    [uncond; cond]) and ``step``, a runner of the stage's ``ddpm_step_graph`` on the same backend and device."""

    def __init__(self, unet: Runner, step: Runner):
        self.unet = unet
        self.step = step
        self.dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in unet.spec.inputs}
        self.host_copies = 0  # device -> host copies of the images so far (the final x; + 1 a step with step_end)

    def __call__(self, x: np.ndarray, conditioning: dict[str, np.ndarray], timesteps: Sequence[int],
                 rows: np.ndarray, guidance: float, draw_noise: Callable[[], np.ndarray],
                 step_end: Callable[[int, object, np.ndarray], None] | None = None) -> np.ndarray:
        """x (B, C, H, W) float32 x_T -> x_0 (B, C, H, W) float32. ``conditioning``: the U-Net's other inputs
        for 2B rows, uploaded once; ``rows``: ``ddpm_rows``; ``draw_noise``: the step's (B, C, H, W) noise,
        called once per step after its U-Net call (the host loop's order)."""
        x = np.asarray(x, dtype=np.float32)
        first = x.astype(self.dtypes["sample"])
        sample, x_value = self.unet.upload(np.concatenate([first, first])), self.step.upload(x)
        constant = {name: self.unet.upload(np.asarray(value).astype(self.dtypes[name]))
                    for name, value in conditioning.items()}
        guidance_value = self.step.upload(np.array([guidance], dtype=np.float32))
        for index, t in enumerate(timesteps):
            timestep = np.full((2 * len(x),), t, dtype=self.dtypes["timestep"])
            output = self.unet.infer({"sample": sample, "timestep": timestep, **constant},
                                     to_host=False)["model_output"]
            noise = np.asarray(draw_noise(), dtype=np.float32)
            feeds = dict(zip(DDPM_INPUTS, (x_value, output, noise, rows[index].astype(np.float32), guidance_value)))
            stepped = self.step.infer(feeds, to_host=False)
            x_value, sample = (stepped[name] for name in STEP_OUTPUTS)
            if step_end is not None:  # (step index, timestep, x): one more host copy per step
                self.host_copies += 1
                step_end(index, t, x_value.to_host())
        self.host_copies += 1
        return x_value.to_host()
