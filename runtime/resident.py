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

Samplers the latent-diffusion pipeline keeps on the host loop: DDPM, DDIM with dynamic thresholding
(the clip of x_0 at a per-sample percentile is not affine), DPM-Solver++(2M) (multistep: the update also
uses the previous step's denoised estimate), and user-supplied sampler factories (no known update
rule). DDPM, with dynamic thresholding and a learned-range variance, has a step graph of its own
(``ddpm_step_model``, section "DDPM" below), which the Imagen cascade uses.

TensorRT is not covered: its runner stages every call through host arrays. A resident loop there would
bind device pointers (``set_tensor_address``) of U-Net output / step-graph input buffers that persist
across steps, run the step as a TensorRT engine of this graph (or a CUDA kernel) on the same stream, and
copy the latents to the host once after the loop.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from genrt.errors import GenrtError, require
from genrt.runtime.backends.base import numpy_dtype
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, open_session, run_bound, to_device
from genrt.runtime.schedulers.ddim import DDIMSampler
from genrt.runtime.schedulers.ddpm import MIN_VARIANCE, DDPMSampler
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
        self._step = _open_step(model, unet)
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


# ---------------------------------------------------------------------------------------------------------
# DDPM (the Imagen cascade): guidance, x_0, dynamic thresholding, posterior mean + sigma noise on the device
#
# Step i from timestep t to the next visited t' (t' = -1 after the last; runtime/schedulers/ddpm.py):
#     eps    = uncond[:, :C] + g (cond[:, :C] - uncond[:, :C])     guided (B, C, H, W)
#     v      = cond[:, C:2C]                                       learned-range variance, conditional half
#     x_0    = (p x - q eps) / d       (p, q, d) = (1, sqrt(1-abar_t), sqrt(abar_t)) for epsilon,
#                                      (sqrt(abar_t), sqrt(1-abar_t), 1) for v, (0, -1, 1) for sample
#     x_0    = clamp(x_0, -s, s) / s,  s = clip(quantile(|x_0|, p), 1, max)   per sample (dynamic thresholding)
#     mean   = m0 x_0 + m1 x                                       DDPM eq. (7)
#     sigma  = std (fixed_small) | exp(0.5 (f log beta + (1 - f) log betatilde)), f = (v + 1) / 2 (learned_range)
#     x_next = mean + sigma (on noise)                             on = 0 at t = 0 (the last step adds no noise)
# The per-step scalars are the row ``DDPM_ROW`` (``ddpm_rows``, float64 from the sampler's schedule, fed as a
# float32 (9,) OrtValue); the operations and their order are those of DDPMSampler.step, so float32 results
# agree with the host loop to rounding.
#
# The quantile without sorting N values. numpy.quantile (linear): with a the N values ascending,
# position = p (N - 1), lo = floor(position), s = a[lo] + (position - lo) (a[lo + 1] - a[lo]) (a[lo] when
# lo = N - 1). a[lo] and a[lo + 1] are among the K = N - lo largest values, so the graph takes ONNX TopK
# (largest, sorted descending) with that K and reads entries K - 1 (= a[lo]) and K - 2 (= a[lo + 1]).
# K is about N (1 - p): at p = 0.995, 63 of N = 64 * 64 * 3 and 985 of 256 * 256 * 3, but 15730 of
# 1024 * 1024 * 3 (p >= 0.9988 brings that stage under 3840). TensorRT's TopK takes K < 3840
# (TENSORRT_TOPK_LIMIT): a TensorRT build of this graph must refuse a stage above it (keep it on the host
# loop) or take the quantile another way (bisection on the threshold value with ReduceSum of |x_0| > s);
# ONNX Runtime, the only backend wired here, has no such limit.
# ---------------------------------------------------------------------------------------------------------

DDPM_ROW = ("x_scale", "output_scale", "x0_divisor", "mean_x0", "mean_x", "std", "log_beta", "log_posterior",
            "noise_on")
DDPM_INPUTS = ("x", "model_output", "noise", "row", "guidance")
# TensorRT's TopK limit (K < 3840): the largest K a TensorRT build of the threshold may use
TENSORRT_TOPK_LIMIT = 3839


def quantile_order_statistics(count: int, percentile: float) -> tuple[int, float]:
    """(K, fraction) of numpy.quantile(values, percentile) over ``count`` values: the interpolated order
    statistics are the K-th and (K-1)-th largest (one value when K = 1), weighted 1 - fraction and fraction."""
    position = percentile * (count - 1)
    low = int(position)  # floor, as genrt.runtime.schedulers.guidance.batch_quantile
    return count - low, position - low


def ddpm_resident_capable(sampler) -> bool:
    """Whether ``sampler`` is the stock DDPM sampler, whose step ``ddpm_step_model`` computes."""
    return type(sampler) is DDPMSampler


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


def ddpm_step_model(channels: int, size: tuple[int, int], learned: bool, percentile: float | None,
                    threshold_max: float | None, unet_dtype: str = "float32", output_dtype: str = "float32") -> bytes:
    """The serialized ONNX DDPM step graph for (B, ``channels``, *``size``) images.

    Inputs: x (B, C, H, W) float32; model_output (2B, C_out, H, W) of ``output_dtype`` ([uncond; cond],
    C_out >= 2C when ``learned``, else >= C); noise (B, C, H, W) float32; row (9,) float32 (``DDPM_ROW``);
    guidance (1,) float32. Outputs: x_next (B, C, H, W) float32 and unet_input (2B, C, H, W) of
    ``unet_dtype`` ([x_next; x_next]). ``percentile`` None: no dynamic thresholding.
    """
    onnx = require("onnx", extra="cpu")
    helper, proto, numpy_helper = onnx.helper, onnx.TensorProto, onnx.numpy_helper
    elem = {"float32": proto.FLOAT, "float16": proto.FLOAT16}
    for dtype in (unet_dtype, output_dtype):
        if dtype not in elem:
            raise GenrtError(f"the U-Net has {dtype} images", fix="use the host loop (resident=False)")
    constants = {"zero": np.array([0], np.int64), "channels": np.array([channels], np.int64),
                 "channels2": np.array([2 * channels], np.int64), "axis1": np.array([1], np.int64),
                 "one": np.array(1.0, np.float32), "two": np.array(2.0, np.float32), "half": np.array(0.5, np.float32)}
    node = helper.make_node
    nodes = [node("Cast", ["model_output"], ["output32"], to=proto.FLOAT),
             node("Split", ["output32"], ["uncond", "cond"], axis=0),
             node("Slice", ["uncond", "zero", "channels", "axis1"], ["eps_uncond"]),
             node("Slice", ["cond", "zero", "channels", "axis1"], ["eps_cond"]),
             node("Sub", ["eps_cond", "eps_uncond"], ["delta"]),
             node("Mul", ["guidance", "delta"], ["scaled_delta"]),
             node("Add", ["eps_uncond", "scaled_delta"], ["eps"]),
             node("Split", ["row"], list(DDPM_ROW), axis=0),
             # x_0 = (p x - q eps) / d
             node("Mul", ["x_scale", "x"], ["px"]),
             node("Mul", ["output_scale", "eps"], ["qe"]),
             node("Sub", ["px", "qe"], ["x0_numerator"]),
             node("Div", ["x0_numerator", "x0_divisor"], ["x0_raw"])]
    x0 = "x0_raw"
    if percentile is not None:
        count = channels * size[0] * size[1]
        k, fraction = quantile_order_statistics(count, percentile)
        constants.update({"k": np.array([k], np.int64), "low_index": np.array([k - 1], np.int64),
                          "high_index": np.array([max(k - 2, 0)], np.int64),
                          "fraction": np.array(fraction, np.float32), "spatial": np.array([2, 3], np.int64)})
        nodes += [node("Abs", ["x0_raw"], ["magnitude"]),
                  node("Flatten", ["magnitude"], ["flat"], axis=1),  # (B, N)
                  node("TopK", ["flat", "k"], ["largest", "largest_at"], axis=1, largest=1, sorted=1),  # (B, K)
                  node("Gather", ["largest", "low_index"], ["a_low"], axis=1),  # (B, 1): a[lo]
                  node("Gather", ["largest", "high_index"], ["a_high"], axis=1),  # a[lo + 1]
                  node("Sub", ["a_high", "a_low"], ["gap"]),
                  node("Mul", ["fraction", "gap"], ["step_up"]),
                  node("Add", ["a_low", "step_up"], ["quantile"]),
                  node("Max", ["quantile", "one"], ["floored"])]
        bounded = "floored"
        if threshold_max is not None:
            constants["threshold_max"] = np.array(threshold_max, np.float32)
            nodes.append(node("Min", ["floored", "threshold_max"], ["capped"]))
            bounded = "capped"
        nodes += [node("Unsqueeze", [bounded, "spatial"], ["s"]),  # (B, 1, 1, 1)
                  node("Neg", ["s"], ["minus_s"]),
                  node("Min", ["x0_raw", "s"], ["below"]),
                  node("Max", ["below", "minus_s"], ["clamped"]),
                  node("Div", ["clamped", "s"], ["x0_thresholded"])]
        x0 = "x0_thresholded"
    nodes += [node("Mul", ["mean_x0", x0], ["mean_a"]),
              node("Mul", ["mean_x", "x"], ["mean_b"]),
              node("Add", ["mean_a", "mean_b"], ["mean"]),
              node("Mul", ["noise", "noise_on"], ["step_noise"])]
    if learned:
        nodes += [node("Slice", ["cond", "channels", "channels2", "axis1"], ["variance_value"]),
                  node("Add", ["variance_value", "one"], ["shifted"]),
                  node("Div", ["shifted", "two"], ["f"]),
                  node("Mul", ["f", "log_beta"], ["log_a"]),
                  node("Sub", ["one", "f"], ["one_minus_f"]),
                  node("Mul", ["one_minus_f", "log_posterior"], ["log_b"]),
                  node("Add", ["log_a", "log_b"], ["log_variance"]),
                  node("Mul", ["half", "log_variance"], ["log_sigma"]),
                  node("Exp", ["log_sigma"], ["sigma"])]
    else:
        nodes.append(node("Identity", ["std"], ["sigma"]))
    nodes += [node("Mul", ["sigma", "step_noise"], ["scaled_noise"]),
              node("Add", ["mean", "scaled_noise"], ["x_next"]),
              node("Cast", ["x_next"], ["x_next_unet"], to=elem[unet_dtype]),
              node("Concat", ["x_next_unet", "x_next_unet"], ["unet_input"], axis=0)]
    image = ["B", channels, *size]
    inputs = [helper.make_tensor_value_info("x", proto.FLOAT, image),
              helper.make_tensor_value_info("model_output", elem[output_dtype], ["N", "C_out", *size]),
              helper.make_tensor_value_info("noise", proto.FLOAT, image),
              helper.make_tensor_value_info("row", proto.FLOAT, [len(DDPM_ROW)]),
              helper.make_tensor_value_info("guidance", proto.FLOAT, [1])]
    outputs = [helper.make_tensor_value_info("x_next", proto.FLOAT, image),
               helper.make_tensor_value_info("unet_input", elem[unet_dtype], ["N", channels, *size])]
    used = {name for item in nodes for name in item.input}
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items() if name in used]
    graph = helper.make_graph(nodes, "genrt_ddpm_step", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STEP_OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class ResidentDDPM:
    """The guided DDPM loop of one U-Net ``OnnxRuntimeRunner`` on its device (inputs ``sample``, ``timestep``
    and conditioning such as ``text_embeddings``, ``text_mask``, ``low_res``, ``noise_level``; output
    ``model_output`` (2B, C_out, H, W), [uncond; cond]). The step graph is built per image size, on first use."""

    def __init__(self, unet: OnnxRuntimeRunner, sampler: DDPMSampler):
        self.unet = unet
        self.dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in unet.spec.inputs}
        self.learned = sampler.config.variance_type == "learned_range"
        self.percentile = sampler.dynamic_threshold_percentile
        self.threshold_max = sampler.dynamic_threshold_max
        self._output = next(spec for spec in unet.spec.outputs if spec.name == "model_output")
        self._steps: dict[tuple[int, int, int], object] = {}  # step-graph sessions by (C, H, W)
        self.host_copies = 0  # device -> host copies of the images so far (one per call: the final x)

    def _step_session(self, channels: int, size: tuple[int, int]):
        key = (channels, *size)
        if key not in self._steps:
            out_channels = self._output.shape[1]
            needed = 2 * channels if self.learned else channels
            if isinstance(out_channels, int) and out_channels < needed:
                raise GenrtError(f"{self.unet.spec.name} outputs {out_channels} channels for {channels}-channel "
                                 f"images", fix=f"export a U-Net with {needed} output channels, or resident=False")
            model = ddpm_step_model(channels, size, self.learned, self.percentile, self.threshold_max,
                                    self.unet.spec.input("sample").dtype, self._output.dtype)
            self._steps[key] = _open_step(model, self.unet)
        return self._steps[key]

    def __call__(self, x: np.ndarray, conditioning: dict[str, np.ndarray], timesteps: Sequence[int],
                 rows: np.ndarray, guidance: float, draw_noise: Callable[[], np.ndarray],
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """x (B, C, H, W) float32 x_T -> x_0 (B, C, H, W) float32. ``conditioning``: the U-Net's other inputs
        for 2B rows, uploaded once; ``rows``: ``ddpm_rows``; ``draw_noise``: the step's (B, C, H, W) noise,
        called once per step after its U-Net call (the host loop's order)."""
        step = self._step_session(x.shape[1], tuple(x.shape[2:]))
        device, device_id = self.unet.device, self.unet.device_id
        # host arrays behind CPU OrtValues (ORT shares their memory) stay alive while used: the loop's
        # constants for the whole call, a step's timesteps and noise for that step
        held: list[np.ndarray] = []

        def upload(array: np.ndarray, keep: list[np.ndarray]):
            keep.append(np.ascontiguousarray(array))
            return to_device(keep[-1], device, device_id)

        x = np.asarray(x, dtype=np.float32)
        first = x.astype(self.dtypes["sample"])
        sample, x_value = upload(np.concatenate([first, first]), held), upload(x, held)
        constant = {name: upload(np.asarray(value).astype(self.dtypes[name]), held)
                    for name, value in conditioning.items()}
        guidance_value = upload(np.array([guidance], dtype=np.float32), held)
        rows32 = [upload(row.astype(np.float32), held) for row in rows]
        for index, t in enumerate(timesteps):
            current: list[np.ndarray] = []
            timestep = upload(np.full((2 * len(x),), t, dtype=self.dtypes["timestep"]), current)
            output = self.unet.infer_ortvalues({"sample": sample, "timestep": timestep, **constant})["model_output"]
            noise = upload(np.asarray(draw_noise(), dtype=np.float32), current)
            feeds = dict(zip(DDPM_INPUTS, (x_value, output, noise, rows32[index], guidance_value)))
            x_value, sample = run_bound(step, feeds, STEP_OUTPUTS, device, device_id)
            if progress is not None:
                progress(index + 1, len(timesteps))
        self.host_copies += 1
        return x_value.numpy()


def _open_step(model: bytes, unet: OnnxRuntimeRunner):
    """An ONNX Runtime session of a step graph on ``unet``'s device."""
    try:
        return open_session(model, unet.device, unet.device_id, unet.threads)
    except GenrtError:
        raise
    except Exception as exc:  # ONNX Runtime's own exception types; the message is the clue
        raise GenrtError(f"ONNX Runtime cannot open the step graph: {exc}",
                         fix="use the host loop (resident=False)") from None
