"""genrt.export.calibrate: min/max of chosen tensors, one sample per call, equal to the tensors' own min/max."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from genrt.errors import GenrtError
from genrt.export.calibrate import tensor_ranges
from genrt.export.quantize import quantized_activations, weight_nodes
from tests.export.test_quantize import ConvAttention


@pytest.fixture
def graph(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fp32.onnx"
    torch.onnx.export(ConvAttention().eval(), (torch.randn(2, 16, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


def _reference_ranges(path, tensors, samples):
    """The tensors returned as graph outputs, min/max taken in numpy over every sample."""
    model = onnx.load(str(path))
    model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = [session.run(tensors, feeds) for feeds in samples]
    return {name: (min(float(v[i].min()) for v in values), max(float(v[i].max()) for v in values))
            for i, name in enumerate(tensors)}


def test_ranges_equal_the_tensors_min_and_max_over_every_sample(graph):
    structure = onnx.load(str(graph))
    tensors = quantized_activations(structure, weight_nodes(structure))
    assert "x" in tensors and "y" not in tensors and len(tensors) == 4  # conv in/out, to_qkv in/out
    rng = np.random.default_rng(0)
    # samples of different batch sizes and scales: the range of the larger one must win
    samples = [{"x": (scale * rng.standard_normal((batch, 16, 8, 8))).astype(np.float32)}
               for batch, scale in ((1, 1.0), (3, 4.0), (2, 0.5))]
    before = sorted(graph.parent.iterdir())
    got = tensor_ranges(graph, tensors, iter(samples), threads=1)
    expected = _reference_ranges(graph, tensors, samples)
    assert got.keys() == expected.keys()
    for name in tensors:
        assert got[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-7), name
    assert got["x"][1] > 8.0  # the scaled sample's range, not the first one's
    assert sorted(graph.parent.iterdir()) == before  # the augmented graph is gone


def test_refuses_no_samples_and_unknown_tensors(graph):
    with pytest.raises(GenrtError, match="no calibration sample"):
        tensor_ranges(graph, ["x"], iter([]))
    with pytest.raises(GenrtError, match="not made by the graph"):
        tensor_ranges(graph, ["x", "no-such-tensor"], iter([{"x": np.zeros((1, 16, 8, 8), np.float32)}]))
