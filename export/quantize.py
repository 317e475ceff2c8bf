"""Static int8 quantisation of an exported fp32 graph with ONNX Runtime's quantizer (for its CPU kernels).

W8A8 in QDQ form: per-output-channel symmetric int8 weights and per-tensor uint8 activations around every Conv
and every MatMul whose second input is a weight (:func:`weight_nodes`); ranges from min/max calibration on the
component's own sample inputs. ONNX Runtime fuses each ``DequantizeLinear -> Conv/MatMul -> QuantizeLinear`` into
``QLinearConv`` / ``QLinearMatMul``, whose u8s8 kernels use VNNI where the CPU has it (``avx512_vnni`` /
``avx_vnni``): a 320-channel 3x3 convolution at 32x32, batch 2, ran 98 -> 29 ms at one thread here.

The fp32 islands are everything else: attention's activation x activation MatMuls and Softmax, the norms,
SiLU/GELU, residual adds and the time/text embeddings stay in float32, and the graph's inputs and outputs keep
their float32 dtypes, so a runtime that runs the fp32 graph runs this one unchanged.

Not yet for real sizes: the memory of ONNX Runtime's calibration grows with the activations (the tiny ldm U-Net,
batch 2: 0.7 GB at 64 px, 3.2 GB at 128 px, killed at 20 GB at 256 px).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from genrt.errors import GenrtError, require

OP_TYPES = ("Conv", "MatMul")  # the ops whose integer kernels are faster on the CPU


def quantize_int8(source: Path, target: Path, calibration: Iterable[dict[str, np.ndarray]],
                  external_data: bool = False) -> Path:
    """Write the int8 QDQ graph of the fp32 graph ``source`` to ``target`` (weights in ``target.data`` when
    ``external_data``), with activation ranges from running ``calibration`` (feeds by input name) through
    ``source``; returns ``target``."""
    require("onnxruntime", extra="cpu")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(calibration)

        def get_next(self):
            return next(self._feeds, None)

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(source), str(target), Feeds(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OP_TYPES),
                    nodes_to_quantize=weight_nodes(onnx.load(str(source), load_external_data=False)), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=external_data,
                    extra_options={"CalibMaxIntermediateOutputs": 16})
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
