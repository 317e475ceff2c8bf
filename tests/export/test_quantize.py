"""genrt.export.quantize: static int8 QDQ around Conv and weight MatMuls, attention's MatMuls left in float32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from genrt.export.quantize import quantize_int8


class ConvAttention(nn.Module):
    """x (B, C, H, W) -> a convolution, then self-attention over the H*W positions (weight and score MatMuls)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)

    def forward(self, x):
        h = torch.nn.functional.silu(self.conv(x))
        tokens = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        scores = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1)  # (B, HW, HW)
        return (scores @ v).transpose(1, 2).reshape(x.shape)


def test_int8_graph_quantizes_conv_and_weight_matmuls_only_and_stays_close(tmp_path):
    torch.manual_seed(0)
    module = ConvAttention().eval()
    x = torch.randn(2, 16, 8, 8)
    source = tmp_path / "fp32.onnx"
    torch.onnx.export(module, (x,), str(source), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"])
    rng = np.random.default_rng(1)
    calibration = [{"x": rng.standard_normal((2, 16, 8, 8)).astype(np.float32)} for _ in range(4)]
    target = quantize_int8(source, tmp_path / "int8" / "model.onnx", iter(calibration))

    model = onnx.load(str(target))
    producers = {output: node for node in model.graph.node for output in node.output}
    quantized = {node.op_type: [] for node in model.graph.node if node.op_type in ("Conv", "MatMul")}
    for node in model.graph.node:
        if node.op_type in quantized:  # every input comes through a DequantizeLinear, or none does
            quantized[node.op_type].append(all(producers.get(name) is not None and
                                               producers[name].op_type == "DequantizeLinear" for name in node.input[:2]))
    assert quantized["Conv"] == [True]
    assert sorted(quantized["MatMul"]) == [False, False, True]  # to_qkv quantized; q @ k^T and scores @ v not
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT]  # the fp32 graph's I/O: the runtime runs it unchanged

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    run = {path: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for path in (source, target)}
    expected, got = (run[path].run(None, {"x": x.numpy()})[0] for path in (source, target))
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert 1e-4 < error < 5e-2, error  # quantised (not the fp32 graph), and close
