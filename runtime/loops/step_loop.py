"""The skeleton both denoising loops on the device share: U-Net -> step graph -> U-Net ..., device tensors only.

A step graph (``genrt.runtime.loops.step_graphs``) takes the state x, the U-Net's output, the step's noise, one
row of per-step scalars and the guidance scale, and returns (x_next, the next U-Net input). Everything constant
over a call (the first U-Net input, the conditioning, x and the guidance scale) is uploaded once; per step only
the timesteps, the row and the noise go host -> device, and x comes back once, after the last step (once more per
step when the caller asks for ``step_end``). ``guided.ResidentDenoiser`` (latent diffusion) and
``ddpm.ResidentDDPM`` (Imagen) differ only in the first U-Net input, the rows and the step graph's input names.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from genrt.runtime.backends.base import Runner, numpy_dtype
from genrt.runtime.loops.step_graphs import STEP_OUTPUTS

# Called after each step with (step index, timestep, x on the host).
StepEnd = Callable[[int, object, np.ndarray], None]


class StepLoop:
    """The loop of ``unet`` (inputs ``sample``, ``timestep`` and conditioning; output ``model_output``) and
    ``step``, a runner of a step graph with inputs ``step_inputs`` (x, model output, noise, row, guidance, in
    that order) and outputs ``STEP_OUTPUTS``, on the same backend and device."""

    def __init__(self, unet: Runner, step: Runner, step_inputs: tuple[str, str, str, str, str]):
        self.unet = unet
        self.step = step
        self.step_inputs = step_inputs
        self.dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in unet.spec.inputs}
        self.host_copies = 0  # device -> host copies of x so far (the final ones; + 1 a step with step_end)

    def run(self, x: np.ndarray, first_input: np.ndarray, conditioning: dict[str, np.ndarray],
            timesteps: Sequence[int], rows: np.ndarray, guidance: float,
            draw_noise: Callable[[], np.ndarray] | None, step_end: StepEnd | None) -> np.ndarray:
        """x (B, C, H, W) float32 at the first timestep -> x after the last step (B, C, H, W) float32.

        ``first_input``: the first U-Net ``sample`` (R, C, H, W), R = 2B with guidance ([uncond; cond] rows), else
        B; ``conditioning``: the U-Net's other inputs for R rows; ``rows``: one row of step scalars per timestep;
        ``draw_noise``: the step's (B, C, H, W) noise, called once per step after its U-Net call (the host loops'
        order; None: a deterministic sampler, fed zeros)."""
        # 1. the loop's constants, copied to the device once
        sample = self.unet.upload(first_input.astype(self.dtypes["sample"]))
        constant = {name: self.unet.upload(np.asarray(value).astype(self.dtypes[name]))
                    for name, value in conditioning.items()}
        x_value = self.step.upload(x)
        guidance_value = self.step.upload(np.array([guidance], dtype=np.float32))
        zeros = self.step.upload(np.zeros_like(x)) if draw_noise is None else None
        # 2. U-Net -> step graph -> U-Net ..., device tensors only; per step the timesteps, row and noise go up
        for index, t in enumerate(timesteps):
            timestep = np.full((len(first_input),), t, dtype=self.dtypes["timestep"])
            output = self.unet.infer({"sample": sample, "timestep": timestep, **constant},
                                     to_host=False)["model_output"]
            noise = zeros if draw_noise is None else np.asarray(draw_noise(), dtype=np.float32)
            feeds = dict(zip(self.step_inputs, (x_value, output, noise, rows[index].astype(np.float32),
                                                guidance_value)))
            stepped = self.step.infer(feeds, to_host=False)
            x_value, sample = (stepped[name] for name in STEP_OUTPUTS)
            if step_end is not None:  # (step index, timestep, x): one more host copy per step
                self.host_copies += 1
                step_end(index, t, x_value.to_host())
        # 3. the one copy of x back to the host
        self.host_copies += 1
        return x_value.to_host()
