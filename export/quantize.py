"""Static int8 quantisation of an exported fp32 graph with ONNX Runtime's quantizer (for its CPU kernels).

W8A8 in QDQ form: per-output-channel symmetric int8 weights and per-tensor uint8 activations around every Conv
and every MatMul whose second input is a weight (:func:`weight_nodes`); ranges from min/max calibration on the
component's own sample inputs. ONNX Runtime fuses each ``DequantizeLinear -> Conv/MatMul -> QuantizeLinear`` into
``QLinearConv`` / ``QLinearMatMul``, whose u8s8 kernels use VNNI where the CPU has it (``avx512_vnni`` /
``avx_vnni``): a 320-channel 3x3 convolution at 32x32, batch 2, ran 98 -> 29 ms at one thread here.

The fp32 islands are everything else: attention's activation x activation MatMuls and Softmax, the norms,
SiLU/GELU, residual adds and the time/text embeddings stay in float32, and the graph's inputs and outputs keep
their float32 dtypes, so a runtime that runs the fp32 graph runs this one unchanged.

Calibration is genrt's own (:mod:`genrt.export.calibrate`): only the inputs and outputs of the quantised nodes,
reduced to scalars inside the graph one sample at a time, so its memory is that of one plain inference. The
quantizer (``QDQQuantizer``) is handed those ranges and never runs the model. Peak memory of the whole process,
U-Net at batch 2, 4 calibration calls, one thread: the tiny ldm U-Net 0.42 GB at 64 px, 0.61 GB at 128 px, 2.6 GB
at 256 px (ONNX Runtime's calibrator: 0.7 GB, 3.2 GB, killed at 20 GB); the real SD 1.5 U-Net at 512 px
(``benchmarks/cpu_sd15_unet.py``, 451 tensors) 9.6 GB while calibrating (the session's 3.4 GB of weights, their
prepacked copies and one call's activations) and 10.2 GB with the quantizer, 506 s on a loaded 2-core host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from genrt.errors import GenrtError, require
from genrt.export.calibrate import tensor_ranges
from genrt.fileio import temporary_file

OP_TYPES = ("Conv", "MatMul")  # the ops whose integer kernels are faster on the CPU
# What a quantised graph computes in float32 (its manifest entry's fp32_islands).
FLOAT32_ISLANDS = ("attention matmul", "elementwise", "embeddings", "normalization", "softmax")


def quantize_int8(source: Path, target: Path, calibration: Iterable[dict[str, np.ndarray]],
                  external_data: bool = False) -> Path:
    """Write the int8 QDQ graph of the fp32 graph ``source`` to ``target`` (weights in ``target.data`` when
    ``external_data``), with activation ranges from running ``calibration`` (feeds by input name) through
    ``source``; returns ``target``."""
    quantization = require("onnxruntime.quantization", extra="cpu")
    structure = onnx.load(str(source), load_external_data=False)
    nodes = weight_nodes(structure)
    ranges = tensor_ranges(source, quantized_activations(structure, nodes), calibration)
    del structure
    tensors_range = quantization.TensorsData(quantization.CalibrationMethod.MinMax, {
        name: quantization.TensorData(lowest=np.float32(low), highest=np.float32(high))
        for name, (low, high) in ranges.items()})
    quantizer = quantization.QDQQuantizer(_with_shapes(source), True, False, quantization.QuantType.QInt8,
                                          quantization.QuantType.QUInt8, tensors_range, nodes, [], list(OP_TYPES), {})
    quantizer.quantize_model()
    target.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(target), external_data)
    return target


def weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to quantize: every Conv, and every MatMul whose second input is a weight (an
    initializer; ``MatMulConstBOnly`` of the quantizer holds only for its QOperator form)."""
    weights = {initializer.name for initializer in model.graph.initializer}
    nodes = [node for node in model.graph.node
             if node.op_type == "Conv" or (node.op_type == "MatMul" and node.input[1] in weights)]
    unnamed = [node.op_type for node in nodes if not node.name]
    if unnamed:
        raise GenrtError(f"the graph has {len(unnamed)} unnamed {'/'.join(sorted(set(unnamed)))} nodes to quantize",
                         fix="give every Conv and MatMul node a name (torch.onnx.export names them)")
    return [node.name for node in nodes]


def quantized_activations(model: onnx.ModelProto, nodes: list[str]) -> list[str]:
    """The tensors whose ranges the quantizer needs: the activation input and the output of each of ``nodes``
    (weights and biases are quantised from their own values), sorted."""
    weights = {initializer.name for initializer in model.graph.initializer}
    chosen = set(nodes)
    return sorted({name for node in model.graph.node if node.name in chosen
                   for name in (node.input[0], node.output[0]) if name not in weights})


def _with_shapes(source: Path) -> onnx.ModelProto:
    """``source`` with its weights and inferred tensor types (the quantizer reads them); inferred by path, beside
    ``source``, so a graph with external weights over 2 GB works."""
    with temporary_file(source) as inferred:
        onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
        return onnx.load(str(inferred))
