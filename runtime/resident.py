"""Device-resident denoising: the latents stay on the engine's device for the whole loop.

Why a small graph is enough. For DDIM (any eta, without dynamic thresholding), Euler and Euler
ancestral, with epsilon, v or sample prediction, step i of the guided loop is affine in the state x,
the guided model output and the step's noise, with scalar coefficients that depend only on the step:
    guided   = uncond + g (cond - uncond)          classifier-free guidance, g the guidance scale
    x_next   = a_i x + b_i guided + c_i noise       the sampler's ``step`` at timestep t_i
    U-Net input of step i+1 = [s_{i+1} x_next; s_{i+1} x_next]   (s: ``scale_model_input``, 1 for DDIM)
The coefficients are measured from the sampler's own ``step`` and ``scale_model_input`` in float64 on a
probe (``affine_coefficients``): no sampler formula is repeated here, and the probe checks on random
values that the step really is affine.

The update runs as a graph of a dozen ONNX nodes built here with ``onnx.helper``
(``guided_step_model``), opened on the U-Net's device; ``ResidentDenoiser`` passes ``OrtValue`` objects
from the U-Net into the step graph and back (``OnnxRuntimeRunner.infer_ortvalues``). Per step only the
timesteps (2B floats), the 4 coefficients and, for a stochastic sampler, the step's noise (drawn on the
host in the order the host loop draws it) go host -> device; the latents come back once, after the
last step, for the VAE decoder.

Samplers kept on the host loop: DDPM and DDIM with dynamic thresholding (the clip of x_0 at a per-sample
percentile is not affine), DPM-Solver++(2M) (multistep: the update also uses the previous step's
denoised estimate), and user-supplied sampler factories (no known update rule).

TensorRT is not covered: its runner stages every call through host arrays. A resident loop there would
bind device pointers (``set_tensor_address``) of U-Net output / step-graph input buffers that persist
across steps, run the step as a TensorRT engine of this graph (or a CUDA kernel) on the same stream, and
copy the latents to the host once after the loop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from genrt.errors import GenrtError, require
from genrt.runtime.backends.base import numpy_dtype
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, open_session, run_bound, to_device
from genrt.runtime.schedulers.ddim import DDIMSampler
from genrt.runtime.schedulers.euler import EulerSampler
from genrt.runtime.schedulers.euler_ancestral import EulerAncestralSampler

# ONNX opset of the step graph (Split without sizes splits into equal parts up to opset 17)
STEP_OPSET = 17
# Probe elements measuring the coefficients (zero, unit x, unit output, unit noise); the rest check affinity
PROBE_UNITS = 4
PROBE_CHECKS = 4
# Largest allowed deviation of the probe from an affine map, relative to the probe's largest value
AFFINE_TOLERANCE = 1e-9
STEP_INPUTS = ("x", "model_output", "noise", "coefficients", "guidance")
STEP_OUTPUTS = ("x_next", "unet_input")


def resident_capable(sampler) -> bool:
    """Whether ``sampler``'s step is affine per step (see the module docstring)."""
    if isinstance(sampler, DDIMSampler):
        return sampler.dynamic_threshold_percentile is None
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


def guided_step_model(guided: bool, unet_dtype: str = "float32", output_dtype: str = "float32") -> bytes:
    """The serialized ONNX step graph.

    Inputs: x (B, C, h, w) float32; model_output (2B, C, h, w) of ``output_dtype`` ([uncond; cond]; (B, ...)
    when not ``guided``); noise (B, C, h, w) float32; coefficients (4,) float32 (a, b, c, s_next); guidance (1,)
    float32. Outputs: x_next (B, C, h, w) float32 and unet_input (2B, C, h, w) of ``unet_dtype``
    ([s x_next; s x_next]; (B, ...) when not ``guided``).
    """
    onnx = require("onnx", extra="cpu")
    helper, proto = onnx.helper, onnx.TensorProto
    elem = {"float32": proto.FLOAT, "float16": proto.FLOAT16}
    for dtype in (unet_dtype, output_dtype):
        if dtype not in elem:
            raise GenrtError(f"the U-Net has {dtype} latents", fix="use the host loop (resident=False)")
    latent = ["B", "C", "h", "w"]
    model_rows = ["N", "C", "h", "w"]
    nodes = [helper.make_node("Cast", ["model_output"], ["output32"], to=proto.FLOAT)]
    if guided:
        nodes += [helper.make_node("Split", ["output32"], ["uncond", "cond"], axis=0),
                  helper.make_node("Sub", ["cond", "uncond"], ["delta"]),
                  helper.make_node("Mul", ["delta", "guidance"], ["scaled_delta"]),
                  helper.make_node("Add", ["uncond", "scaled_delta"], ["guided"])]
    else:
        nodes.append(helper.make_node("Identity", ["output32"], ["guided"]))
    nodes += [
        helper.make_node("Split", ["coefficients"], ["a", "b", "c", "s"], axis=0),
        helper.make_node("Mul", ["x", "a"], ["ax"]),
        helper.make_node("Mul", ["guided", "b"], ["bg"]),
        helper.make_node("Mul", ["noise", "c"], ["cn"]),
        helper.make_node("Add", ["ax", "bg"], ["deterministic"]),
        helper.make_node("Add", ["deterministic", "cn"], ["x_next"]),
        helper.make_node("Mul", ["x_next", "s"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["scaled_unet"], to=elem[unet_dtype]),
        helper.make_node("Concat", ["scaled_unet", "scaled_unet"], ["unet_input"], axis=0) if guided
        else helper.make_node("Identity", ["scaled_unet"], ["unet_input"]),
    ]
    inputs = [helper.make_tensor_value_info("x", proto.FLOAT, latent),
              helper.make_tensor_value_info("model_output", elem[output_dtype], model_rows),
              helper.make_tensor_value_info("noise", proto.FLOAT, latent),
              helper.make_tensor_value_info("coefficients", proto.FLOAT, [4]),
              helper.make_tensor_value_info("guidance", proto.FLOAT, [1])]
    outputs = [helper.make_tensor_value_info("x_next", proto.FLOAT, latent),
               helper.make_tensor_value_info("unet_input", elem[unet_dtype], model_rows)]
    graph = helper.make_graph(nodes, "genrt_guided_step", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STEP_OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class ResidentDenoiser:
    """The guided denoising loop on the device of a U-Net ``OnnxRuntimeRunner`` (inputs ``sample``,
    ``timestep``, ``encoder_hidden_states``; output ``model_output``). ``guided``: the U-Net sees
    [uncond; cond] (2B rows) and the step graph applies classifier-free guidance."""

    def __init__(self, unet: OnnxRuntimeRunner, guided: bool):
        self.unet = unet
        self.guided = guided
        self.dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in unet.spec.inputs}
        output_dtype = next(spec.dtype for spec in unet.spec.outputs if spec.name == "model_output")
        model = guided_step_model(guided, unet.spec.input("sample").dtype, output_dtype)
        try:
            self._step = open_session(model, unet.device, unet.device_id, unet.threads)
        except GenrtError:
            raise
        except Exception as exc:  # ONNX Runtime's own exception types; the message is the clue
            raise GenrtError(f"ONNX Runtime cannot open the guided step graph: {exc}",
                             fix="use the host loop (resident=False)") from None
        self.host_copies = 0  # device -> host copies of the latents so far (one per call: the final latents)

    def __call__(self, latents: np.ndarray, embeddings: np.ndarray, timesteps: Sequence[int],
                 coefficients: tuple[float, np.ndarray], guidance: float,
                 draw_noise: Callable[[], np.ndarray] | None, progress: Callable[[int, int], None] | None = None
                 ) -> np.ndarray:
        """latents (B, C, h, w) float32 at the first timestep, embeddings (2B or B, T, D) -> the final latents
        (B, C, h, w) float32. ``coefficients``: ``affine_coefficients``'s (s_0, rows); ``draw_noise``: the
        step's (B, C, h, w) noise, called once per step after its U-Net call (None: deterministic sampler)."""
        first_scale, rows = coefficients
        device, device_id = self.unet.device, self.unet.device_id
        held: list[np.ndarray] = []  # host arrays behind CPU OrtValues (ORT shares their memory) stay alive

        def upload(array: np.ndarray):
            held.append(np.ascontiguousarray(array))
            return to_device(held[-1], device, device_id)

        # 1. the first U-Net input and the loop's constants, copied to the device once
        latents = np.asarray(latents, dtype=np.float32)
        first = (latents * np.float32(first_scale)).astype(self.dtypes["sample"])
        sample = upload(np.concatenate([first, first]) if self.guided else first)
        x = upload(latents)
        hidden = upload(np.asarray(embeddings).astype(self.dtypes["encoder_hidden_states"]))
        guidance_value = upload(np.array([guidance], dtype=np.float32))
        zeros = upload(np.zeros_like(latents)) if draw_noise is None else None
        rows32 = [upload(row.astype(np.float32)) for row in rows]
        rows_fed = len(first) * (2 if self.guided else 1)
        # 2. U-Net -> guided step -> U-Net ..., OrtValues only
        for index, t in enumerate(timesteps):
            timestep = upload(np.full((rows_fed,), t, dtype=self.dtypes["timestep"]))
            output = self.unet.infer_ortvalues({"sample": sample, "timestep": timestep,
                                                "encoder_hidden_states": hidden})["model_output"]
            noise = zeros if draw_noise is None else upload(np.asarray(draw_noise(), dtype=np.float32))
            feeds = dict(zip(STEP_INPUTS, (x, output, noise, rows32[index], guidance_value)))
            x, sample = run_bound(self._step, feeds, STEP_OUTPUTS, device, device_id)
            if progress is not None:
                progress(index + 1, len(timesteps))
        # 3. the one copy of the latents back to the host
        self.host_copies += 1
        return x.numpy()
