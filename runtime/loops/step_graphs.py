"""The loops' step graphs: small ONNX graphs built with ``onnx.helper``, opened like any other component.

Each builder returns a :class:`StepGraph`: the serialized ONNX model and a manifest-style
:class:`~genrt.manifest.ComponentEntry` describing its tensors (with a profile derived from the U-Net's, so a
TensorRT runner can build an engine of it). ``Runners.open_graph(graph.spec, graph.model)`` opens it on the
U-Net's backend: an ONNX Runtime session, or a TensorRT engine built in-process.

Guided step (DDIM without thresholding, Euler, Euler ancestral; ``genrt.runtime.loops.guided``):
    guided   = uncond + g (cond - uncond)          classifier-free guidance, g the guidance scale
    x_next   = a x + b guided + c noise            the sampler's step, coefficients (a, b, c) per step
    unet_input = [s x_next; s x_next]              s: the next step's ``scale_model_input`` (1 for DDIM)

DDPM step (the Imagen cascade; ``genrt.runtime.loops.ddpm``), from timestep t to the next visited t'
(t' = -1 after the last; genrt/sampling/ddpm.py):
    eps    = uncond[:, :C] + g (cond[:, :C] - uncond[:, :C])     guided (B, C, H, W)
    v      = cond[:, C:2C]                                       learned-range variance, conditional half
    x_0    = (p x - q eps) / d       (p, q, d) = (1, sqrt(1-abar_t), sqrt(abar_t)) for epsilon,
                                     (sqrt(abar_t), sqrt(1-abar_t), 1) for v, (0, -1, 1) for sample
    x_0    = clamp(x_0, -s, s) / s,  s = clip(quantile(|x_0|, p), 1, max)   per sample (dynamic thresholding)
    mean   = m0 x_0 + m1 x                                       DDPM eq. (7)
    sigma  = std (fixed_small) | exp(0.5 (f log beta + (1 - f) log betatilde)), f = (v + 1) / 2 (learned_range)
    x_next = mean + sigma (on noise)                             on = 0 at t = 0 (the last step adds no noise)
The per-step scalars are the row ``DDPM_ROW`` (float32 (9,)); the operations and their order are those of
DDPMSampler.step, so float32 results agree with the host loop to rounding.

The quantile without sorting N values. numpy.quantile (linear): with a the N values ascending,
position = p (N - 1), lo = floor(position), s = a[lo] + (position - lo) (a[lo + 1] - a[lo]) (a[lo] when
lo = N - 1). a[lo] and a[lo + 1] are among the K = N - lo largest values, so the graph takes ONNX TopK
(largest, sorted descending) with that K and reads entries K - 1 (= a[lo]) and K - 2 (= a[lo + 1]).
K is about N (1 - p): at p = 0.995, 63 of N = 64 * 64 * 3 and 985 of 256 * 256 * 3, but 15730 of
1024 * 1024 * 3 (p >= 0.9988 brings that stage under 3840). TensorRT's TopK takes K < 3840
(TENSORRT_TOPK_LIMIT): a TensorRT runner cannot build the graph of a stage above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrt.errors import GenrtError, require
from genrt.manifest import ComponentEntry, ShapeRange, TensorSpec

# ONNX opset of the step graphs (Split without sizes splits into equal parts up to opset 17)
STEP_OPSET = 17
STEP_INPUTS = ("x", "model_output", "noise", "coefficients", "guidance")
STEP_OUTPUTS = ("x_next", "unet_input")
DDPM_ROW = ("x_scale", "output_scale", "x0_divisor", "mean_x0", "mean_x", "std", "log_beta", "log_posterior",
            "noise_on")
DDPM_INPUTS = ("x", "model_output", "noise", "row", "guidance")
# TensorRT's TopK limit (K < 3840): the largest K a TensorRT build of the threshold may use
TENSORRT_TOPK_LIMIT = 3839
HALF_TYPES = ("float32", "float16")


@dataclass(frozen=True)
class StepGraph:
    """A step graph ready to open: ``spec`` describes its tensors (``spec.onnx`` is never read), ``model`` is
    the serialized ONNX."""

    spec: ComponentEntry
    model: bytes


def quantile_order_statistics(count: int, percentile: float) -> tuple[int, float]:
    """(K, fraction) of numpy.quantile(values, percentile) over ``count`` values: the interpolated order
    statistics are the K-th and (K-1)-th largest (one value when K = 1), weighted 1 - fraction and fraction."""
    position = percentile * (count - 1)
    low = int(position)  # floor, as genrt.sampling.guidance.batch_quantile
    return count - low, position - low


def guided_step_graph(unet: ComponentEntry, guided: bool) -> StepGraph:
    """The guided step of ``unet`` (inputs ``sample`` (N, C, h, w), output ``model_output``).

    Inputs: x (B, C, h, w) float32; model_output (N, C, h, w) of the U-Net's output dtype ([uncond; cond],
    N = 2B; N = B when not ``guided``); noise (B, C, h, w) float32; coefficients (4,) float32 (a, b, c, s_next);
    guidance (1,) float32. Outputs: x_next (B, C, h, w) float32 and unet_input (N, C, h, w) of the U-Net's
    ``sample`` dtype ([s x_next; s x_next]; s x_next when not ``guided``).
    """
    onnx = require("onnx", extra="cpu")
    helper, proto = onnx.helper, onnx.TensorProto
    unet_dtype, output_dtype = unet.input("sample").dtype, _output(unet).dtype
    _check_dtypes(unet_dtype, output_dtype, "latents")
    elem = {"float32": proto.FLOAT, "float16": proto.FLOAT16}
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
    inputs = [TensorSpec("x", "float32", tuple(latent)), TensorSpec("model_output", output_dtype, tuple(model_rows)),
              TensorSpec("noise", "float32", tuple(latent)), TensorSpec("coefficients", "float32", (4,)),
              TensorSpec("guidance", "float32", (1,))]
    outputs = [TensorSpec("x_next", "float32", tuple(latent)), TensorSpec("unet_input", unet_dtype, tuple(model_rows))]
    return _step_graph("guided_step" if guided else "step", nodes, inputs, outputs, [], unet, guided)


def ddpm_step_graph(unet: ComponentEntry, channels: int, size: tuple[int, int], learned: bool,
                    percentile: float | None, threshold_max: float | None) -> StepGraph:
    """The DDPM step of ``unet`` for (B, ``channels``, *``size``) images.

    Inputs: x (B, C, H, W) float32; model_output (2B, C_out, H, W) of the U-Net's output dtype ([uncond; cond],
    C_out >= 2C when ``learned``, else >= C); noise (B, C, H, W) float32; row (9,) float32 (``DDPM_ROW``);
    guidance (1,) float32. Outputs: x_next (B, C, H, W) float32 and unet_input (2B, C, H, W) of the U-Net's
    ``sample`` dtype ([x_next; x_next]). ``percentile`` None: no dynamic thresholding.
    """
    onnx = require("onnx", extra="cpu")
    proto, numpy_helper = onnx.TensorProto, onnx.numpy_helper
    unet_dtype, output_dtype = unet.input("sample").dtype, _output(unet).dtype
    _check_dtypes(unet_dtype, output_dtype, "images")
    elem = {"float32": proto.FLOAT, "float16": proto.FLOAT16}
    constants = {"zero": np.array([0], np.int64), "channels": np.array([channels], np.int64),
                 "channels2": np.array([2 * channels], np.int64), "axis1": np.array([1], np.int64),
                 "one": np.array(1.0, np.float32), "two": np.array(2.0, np.float32), "half": np.array(0.5, np.float32)}
    node = onnx.helper.make_node
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
    image = ("B", channels, *size)
    inputs = [TensorSpec("x", "float32", image), TensorSpec("model_output", output_dtype, ("N", "C_out", *size)),
              TensorSpec("noise", "float32", image), TensorSpec("row", "float32", (len(DDPM_ROW),)),
              TensorSpec("guidance", "float32", (1,))]
    outputs = [TensorSpec("x_next", "float32", image), TensorSpec("unet_input", unet_dtype, ("N", channels, *size))]
    used = {name for item in nodes for name in item.input}
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items() if name in used]
    return _step_graph("ddpm_step", nodes, inputs, outputs, initializers, unet, True)


def _step_graph(name: str, nodes: list, inputs: list[TensorSpec], outputs: list[TensorSpec], initializers: list,
                unet: ComponentEntry, guided: bool) -> StepGraph:
    """Serialize and check the graph; describe it as a component whose profile follows the U-Net's."""
    onnx = require("onnx", extra="cpu")
    helper = onnx.helper

    def info(spec: TensorSpec):
        return helper.make_tensor_value_info(spec.name, helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype)),
                                             list(spec.shape))

    graph = helper.make_graph(nodes, f"genrt_{name}", [info(s) for s in inputs], [info(s) for s in outputs],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STEP_OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    spec = ComponentEntry(name=f"{unet.name}.{name}", onnx=Path(f"{unet.name}.{name} (built in memory)"),
                          external_data=None, sha256="", inputs=tuple(inputs), outputs=tuple(outputs),
                          profile=_profile(unet, inputs, guided), fp32_islands=(), engines=())
    return StepGraph(spec=spec, model=model.SerializeToString())


def _profile(unet: ComponentEntry, inputs: list[TensorSpec], guided: bool) -> dict[str, ShapeRange]:
    """Shape ranges of the step graph's 4-d inputs from the U-Net's ``sample`` range: rows N as the U-Net's,
    rows B = N / 2 when ``guided``, fixed axes and C_out (the U-Net's output channels) fixed, other axes as
    the U-Net's. Empty when the U-Net has no range."""
    sample = unet.profile.get("sample")
    if sample is None:
        return {}
    axes = list(zip(sample.min, sample.opt, sample.max))  # (min, opt, max) per axis of (N, C, h, w)
    out_channels = _output(unet).shape[1]
    profile = {}
    for spec in inputs:
        if len(spec.shape) != len(axes):
            continue
        ranges = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                ranges.append((dim, dim, dim))
            elif dim == "C_out" and isinstance(out_channels, int):
                ranges.append((out_channels,) * 3)
            elif axis == 0 and guided and dim == "B":
                ranges.append(tuple(max(1, size // 2) for size in axes[0]))
            else:
                ranges.append(axes[axis])
        profile[spec.name] = ShapeRange(*(tuple(r[k] for r in ranges) for k in range(3)))
    return profile


def _output(unet: ComponentEntry) -> TensorSpec:
    return next(spec for spec in unet.outputs if spec.name == "model_output")


def _check_dtypes(unet_dtype: str, output_dtype: str, what: str) -> None:
    for dtype in (unet_dtype, output_dtype):
        if dtype not in HALF_TYPES:
            raise GenrtError(f"the U-Net has {dtype} {what}", fix="use the host loop (resident=False)")
