"""The runner contract with device tensors, on ONNX Runtime CPU (real sessions): numpy in and out as before,
outputs left on the device where the caller asks, device tensors fed back, uploads, and the refusals."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from genrt.errors import InputError
from genrt.manifest import ComponentEntry, TensorSpec
from genrt.runtime.backends.device import DeviceTensor
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, OrtTensor


def affine_graph() -> tuple[ComponentEntry, bytes]:
    """y = a * x + b (B, 3) float32 and count = the int32 (1,) input plus one."""
    nodes = [helper.make_node("Mul", ["a", "x"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"]),
             helper.make_node("Add", ["count", "one"], ["next_count"])]
    graph = helper.make_graph(
        nodes, "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("count", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3]),
         helper.make_tensor_value_info("next_count", TensorProto.INT32, [1])],
        initializer=[onnx.numpy_helper.from_array(np.array([1], np.int32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    spec = ComponentEntry(name="affine", onnx=Path("affine.onnx"), external_data=None, sha256="",
                          inputs=(TensorSpec("x", "float32", ("B", 3)), TensorSpec("a", "float32", (1,)),
                                  TensorSpec("b", "float32", (1,)), TensorSpec("count", "int32", (1,))),
                          outputs=(TensorSpec("y", "float32", ("B", 3)), TensorSpec("next_count", "int32", (1,))),
                          profile={}, fp32_islands=(), engines=())
    return spec, model.SerializeToString()


@pytest.fixture(scope="module")
def runner():
    spec, model = affine_graph()
    with OnnxRuntimeRunner(spec, threads=1, model=model) as opened:
        yield opened


def feeds(x):
    return {"x": x, "a": np.array([2.0], np.float32), "b": np.array([0.5], np.float32),
            "count": np.array([0], np.int32)}


def test_numpy_in_numpy_out(runner):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = runner.infer(feeds(x))
    assert list(out) == ["y", "next_count"] and all(isinstance(v, np.ndarray) for v in out.values())
    np.testing.assert_array_equal(out["y"], 2 * x + 0.5)
    assert out["next_count"].tolist() == [1]


def test_outputs_stay_on_the_device_and_feed_the_next_call(runner):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    state, count = runner.upload(x), runner.upload(np.array([0], np.int32))
    for _ in range(5):  # y_{k+1} = 2 y_k + 0.5, with the count kept on the device
        out = runner.infer({**feeds(x), "x": state, "count": count}, to_host=False)
        state, count = out["y"], out["next_count"]
        assert isinstance(state, OrtTensor) and state.shape == (4, 3) and state.dtype == np.float32
    expected = x.astype(np.float64)
    for _ in range(5):
        expected = 2 * expected + 0.5
    np.testing.assert_allclose(state.to_host(), expected, rtol=1e-6)
    assert count.to_host().tolist() == [5] and count.dtype == np.int32


def test_to_host_names_some_outputs(runner):
    x = np.ones((1, 3), np.float32)
    out = runner.infer(feeds(x), to_host=["next_count"])
    assert isinstance(out["y"], OrtTensor) and isinstance(out["next_count"], np.ndarray)
    np.testing.assert_array_equal(out["y"].to_host(), np.full((1, 3), 2.5, np.float32))


def test_an_upload_keeps_its_host_memory_alive(runner):
    x = np.full((2, 3), 3.0, np.float32)
    tensor = runner.upload(x)
    del x  # the CPU OrtValue shares this memory; the tensor keeps it
    np.testing.assert_array_equal(runner.infer({**feeds(None), "x": tensor})["y"], np.full((2, 3), 6.5, np.float32))


class ForeignTensor(DeviceTensor):
    backend = "tensorrt"

    def to_host(self):
        raise AssertionError("never read")


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update(x=ForeignTensor((2, 3), np.float32, "cuda:0")),
     "input 'x' is a tensorrt tensor on cuda:0, not a onnxruntime tensor on cpu"),
    (lambda f: f.update(x=[[0.0]]), "input 'x' is a list"),
])
def test_foreign_tensors_are_refused(runner, change, message):
    bad = feeds(np.zeros((2, 3), np.float32))
    change(bad)
    with pytest.raises(InputError) as info:
        runner.infer(bad)
    assert message in str(info.value) and "fix:" in str(info.value)


def test_device_tensors_are_checked_like_arrays(runner):
    bad = {**feeds(np.zeros((2, 3), np.float32)), "count": runner.upload(np.zeros(1, np.int64))}
    with pytest.raises(InputError, match="input 'count' has dtype int64, expected int32"):
        runner.infer(bad)
    with pytest.raises(InputError, match=r"to_host names nope, not a list of outputs.*fix: pass True, False or a list"):
        runner.infer(feeds(np.zeros((2, 3), np.float32)), to_host=["nope"])
