"""The guided denoising loop of latent diffusion on the U-Net's device (DDIM without thresholding, Euler,
Euler ancestral).

Why a small graph is enough. For these samplers, with epsilon, v or sample prediction, step i of the guided
loop is affine in the state x, the guided model output and the step's noise, with scalar coefficients that
depend only on the step (``genrt.runtime.loops.step_graphs``: x_next = a_i x + b_i guided + c_i noise, and the
next U-Net input [s_{i+1} x_next; s_{i+1} x_next]). The coefficients are measured from the sampler's own
``step`` and ``scale_model_input`` in float64 on a probe (``affine_coefficients``): no sampler formula is
repeated here, and the probe checks on random values that the step really is affine.

``ResidentDenoiser`` takes any two runners of one backend and device, the U-Net and its step graph, and passes
device tensors between them (``Runner.infer(..., to_host=False)``). The latents, the first U-Net input, the text
embeddings and the guidance scale are uploaded once per call; per step only the timesteps (2B floats), the row
of 4 coefficients and, for a stochastic sampler, the step's noise (drawn on the host in the order the host loop
draws it) go host -> device, into the runners' own input buffers. The latents come back once, after the last step.

Samplers the latent-diffusion pipeline keeps on the host loop: DDPM, DDIM with dynamic thresholding (the clip
of x_0 at a per-sample percentile is not affine), DPM-Solver++(2M) (multistep: the update also uses the previous
step's denoised estimate), and user-supplied sampler factories (no known update rule).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from genrt.errors import GenrtError
from genrt.runtime.backends.base import Runner
from genrt.runtime.loops.step_graphs import STEP_INPUTS
from genrt.runtime.loops.step_loop import StepEnd, StepLoop
from genrt.sampling.ddim import DDIMSampler
from genrt.sampling.euler import EulerSampler
from genrt.sampling.euler_ancestral import EulerAncestralSampler

# Probe elements measuring the coefficients (zero, unit x, unit output, unit noise); the rest check affinity
PROBE_UNITS = 4
PROBE_CHECKS = 4
# Largest allowed deviation of the probe from an affine map, relative to the probe's largest value
AFFINE_TOLERANCE = 1e-9


def resident_capable(sampler) -> bool:
    """Whether ``sampler``'s step is affine per step (see the module docstring)."""
    if isinstance(sampler, DDIMSampler):  # clipping or thresholding x_0 is not affine
        return sampler.dynamic_threshold_percentile is None and not sampler.config.clip_sample
    return isinstance(sampler, (EulerSampler, EulerAncestralSampler))


def affine_coefficients(make_sampler: Callable[[], object], num_steps: int, timesteps: Sequence[int]
                        ) -> tuple[float, np.ndarray]:
    """(s_0, rows): the first U-Net input scale and one float64 row (a_i, b_i, c_i, s_{i+1}) per visited
    timestep (s after the last step is 1), measured on a fresh sampler of ``make_sampler`` stepped in float64
    through ``timesteps`` (those of ``set_timesteps(num_steps)``, or their tail for img2img)."""
    sampler = make_sampler()
    sampler.set_timesteps(num_steps)
    checks = np.random.default_rng(0).standard_normal((3, PROBE_CHECKS))
    x, output, noise = (np.concatenate([np.eye(PROBE_UNITS)[k], checks[k - 1]]).reshape(1, 1, 1, -1)
                        for k in (1, 2, 3))
    scales, rows = [], []
    for t in timesteps:
        scales.append(float(np.asarray(sampler.scale_model_input(np.ones((1, 1, 1, 1)), t)).reshape(-1)[0]))
        stepped = np.asarray(sampler.step(output, t, x, noise if sampler.needs_noise else None)).reshape(-1)
        constant, a, b, c = stepped[0], *(stepped[1:PROBE_UNITS] - stepped[0])
        predicted = a * checks[0] + b * checks[1] + c * checks[2]
        error = max(abs(constant), np.abs(stepped[PROBE_UNITS:] - predicted).max())
        if error > AFFINE_TOLERANCE * (1.0 + np.abs(stepped).max()):
            raise GenrtError(f"{type(sampler).__name__}'s step at t={t} is not affine in (x, model_output, noise)",
                             fix="run this sampler with the host loop (resident=False)")
        rows.append((a, b, c))
    next_scales = scales[1:] + [1.0]
    return scales[0], np.array([row + (scale,) for row, scale in zip(rows, next_scales)], dtype=np.float64)


class ResidentDenoiser(StepLoop):
    """The guided denoising loop on the device of ``unet`` (inputs ``sample``, ``timestep``,
    ``encoder_hidden_states``; output ``model_output``) and ``step``, a runner of
    ``step_graphs.guided_step_graph(unet.spec, guided)`` on the same backend and device. ``guided``: the U-Net
    sees [uncond; cond] (2B rows) and the step graph applies classifier-free guidance."""

    def __init__(self, unet: Runner, step: Runner, guided: bool):
        super().__init__(unet, step, STEP_INPUTS)
        self.guided = guided

    def __call__(self, latents: np.ndarray, embeddings: np.ndarray, timesteps: Sequence[int],
                 coefficients: tuple[float, np.ndarray], guidance: float,
                 draw_noise: Callable[[], np.ndarray] | None, step_end: StepEnd | None = None) -> np.ndarray:
        """latents (B, C, h, w) float32 at the first timestep, embeddings (2B or B, T, D) -> the final latents
        (B, C, h, w) float32. ``coefficients``: ``affine_coefficients``'s (s_0, rows); ``draw_noise``: the
        step's (B, C, h, w) noise (None: deterministic sampler); ``step_end``: called after each step with
        (step index, timestep, host latents)."""
        first_scale, rows = coefficients
        latents = np.asarray(latents, dtype=np.float32)
        first = latents * np.float32(first_scale)
        return self.run(latents, np.concatenate([first, first]) if self.guided else first,
                        {"encoder_hidden_states": embeddings}, timesteps, rows, guidance, draw_noise, step_end)
