"""ONNX Runtime CUDA: CUDA graphs with I/O binding throughout (runtime/backends/ort_cuda_graphs.py) and the fused
graph the runner opens. The data movement of the bound runs is checked on real ONNX Runtime CPU sessions (the
gpu_graph_id run option is ignored there); the capture protocol and the provider options on the faked
onnxruntime of tests/runtime/fake_gpu.py, which enforces ONNX Runtime's documented rules (a replay must bind the
values it was captured with). The real thing is tests/gpu/test_gpu_ort_cuda.py."""

from pathlib import Path

import numpy as np
import pytest

import genrt.runtime.backends.cuda_stream as cuda_stream
import genrt.runtime.backends.gpu as gpu
import genrt.runtime.backends.onnxruntime as ort_backend
from genrt.manifest import ComponentEntry, EngineRecord, ManifestError, TensorSpec, sha256_of
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, OrtTensor, open_session
from genrt.runtime.backends.ort_cuda_graphs import MAX_GRAPHS, CudaGraphRuns, DeviceCopy
from genrt.runtime.backends.ort_options import UNOPTIMIZED
from tests.runtime.fake_gpu import FakeCudart, FakeOrt


# -- real ONNX Runtime on the CPU: what the bound buffers hold ---------------------------------------------------
def cache_graph() -> bytes:
    """y = 2 x (B, N); present = concat(past, x) (B, P + N): a fixed-shape output and a growing one."""
    from onnx import TensorProto, helper

    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Concat", ["past", "x"], ["present"], axis=1)],
        "cache", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "N"]),
                  helper.make_tensor_value_info("past", TensorProto.FLOAT, ["B", "P"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "N"]),
         helper.make_tensor_value_info("present", TensorProto.FLOAT, ["B", "Q"])], initializer=[two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


SPEC = ComponentEntry(name="prior", onnx=Path("prior.onnx"), external_data=None, sha256="",
                      inputs=(TensorSpec("x", "float32", ("B", "N")), TensorSpec("past", "float32", ("B", "P"))),
                      outputs=(TensorSpec("y", "float32", ("B", "N")), TensorSpec("present", "float32", ("B", "Q"))))


@pytest.fixture
def runs():
    import onnxruntime

    session = open_session(cache_graph(), "cpu", threads=1)
    copy = DeviceCopy(lambda model: open_session(model, "cpu", threads=1, options=UNOPTIMIZED))
    return CudaGraphRuns(onnxruntime, session, SPEC, "cpu", 0, copy)


def test_bound_runs_alternate_two_fixed_buffer_sets_and_keep_each_output_through_the_next_call(runs):
    rng = np.random.default_rng(0)
    past = np.full((2, 3), 5, np.float32)
    outputs, pointers = [], []
    for call in range(6):
        x = rng.standard_normal((2, 4)).astype(np.float32)
        out = runs.run({"x": x, "past": past}, host=frozenset({"present"}))
        np.testing.assert_array_equal(out["present"], np.concatenate([past, x], axis=1))
        outputs.append((x, out["y"]))
        pointers.append(out["y"].data_ptr())
        if call:  # the previous call's device output is still intact
            np.testing.assert_array_equal(outputs[-2][1].numpy(), 2 * outputs[-2][0])
        np.testing.assert_array_equal(out["y"].numpy(), 2 * x)
    assert runs.uncaptured_runs == 1  # only the first call of these shapes: it measured the output shapes
    assert pointers[1] == pointers[3] == pointers[5] and pointers[2] == pointers[4] and pointers[1] != pointers[2]


def test_device_feeds_are_copied_into_the_bound_buffers(runs):
    import onnxruntime

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    past = onnxruntime.OrtValue.ortvalue_from_numpy(np.ones((2, 1), np.float32), "cpu", 0)
    value = OrtTensor(onnxruntime.OrtValue.ortvalue_from_numpy(x, "cpu", 0), "cpu")
    for _ in range(5):  # each call's y fed back as the next x: another slot's output, copied in
        out = runs.run({"x": value, "past": OrtTensor(past, "cpu")}, host=frozenset())
        value = OrtTensor(out["y"], "cpu")
    np.testing.assert_array_equal(value.to_host(), 32 * x)
    np.testing.assert_array_equal(out["present"].numpy(), np.concatenate([np.ones((2, 1)), 16 * x], axis=1))


def test_shapes_beyond_the_graph_budget_run_uncaptured_with_the_same_numbers(runs):
    shapes = [(1, n) for n in range(1, MAX_GRAPHS // 2 + 2)]  # one shape more than the budget holds
    for _ in range(3):
        for shape in shapes:
            x = np.full(shape, float(shape[1]), np.float32)
            out = runs.run({"x": x, "past": np.zeros((1, 0), np.float32)}, host=frozenset({"y", "present"}))
            np.testing.assert_array_equal(out["y"], 2 * x)
            np.testing.assert_array_equal(out["present"], x)
    assert sum(len(slots) for slots in runs._slots.values()) == MAX_GRAPHS
    assert runs.uncaptured_runs == len(shapes) + 2  # each shape's first call, then the one beyond the budget twice


# -- the ONNX Runtime CUDA runner on a faked onnxruntime ------------------------------------------------------------
@pytest.fixture
def fake(monkeypatch):
    fake = FakeOrt()
    monkeypatch.setattr(ort_backend, "require", lambda module, extra: fake)
    monkeypatch.setattr(gpu, "device_count", lambda: 1)
    monkeypatch.setattr(ort_backend, "torch_imported", lambda: True)
    monkeypatch.setattr(cuda_stream, "cuda_runtime_or_none", lambda: None)  # no cuda-python: the wall clock
    return fake


def doubling_spec(tmp_path, fused=()) -> ComponentEntry:
    graph = tmp_path / "unet" / "model.onnx"
    graph.parent.mkdir(exist_ok=True)
    graph.write_bytes(b"plain graph")
    return ComponentEntry(name="unet", onnx=graph, external_data=None, sha256=sha256_of(graph),
                          inputs=(TensorSpec("x", "float32", ("B", 4)),),
                          outputs=(TensorSpec("y", "float32", ("B", 4)),),
                          engines=tuple(fused))


def fused_graph(tmp_path, version, name="model-cuda-0123456789abcdef.onnx") -> EngineRecord:
    path = tmp_path / "unet" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"fused graph " + version.encode())
    return EngineRecord(path=path, key="k" + version, flavour="onnxruntime-cuda", trt_version=version,
                        compute_capabilities=(), static=False, sha256=sha256_of(path))


def test_cuda_runner_captures_each_buffer_set_once_then_replays_with_new_inputs(fake, tmp_path):
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda", device_id=1) as runner:
        provider, options = fake.sessions[0].asked[0]
        assert provider == "CUDAExecutionProvider"
        assert options == {"device_id": 1, "use_tf32": "0", "enable_cuda_graph": "1"}
        for call in range(7):
            x = np.full((2, 4), call, np.float32)
            np.testing.assert_array_equal(runner.infer({"x": x})["y"], 2 * x)
        assert (fake.captures, fake.replays) == (2, 4)  # call 1 measures, 2 and 3 capture, the rest replay
        assert runner.cuda_graphs == ("ONNX Runtime enable_cuda_graph, captured per input shape "
                                      f"(2 so far, at most {MAX_GRAPHS})")


def test_cuda_runner_copies_device_feeds_into_the_captured_buffers(fake, tmp_path):
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda") as runner:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        value = runner.upload(x)
        for _ in range(6):
            value = runner.infer({"x": value}, to_host=False)["y"]
            assert isinstance(value, OrtTensor) and value.device == "cuda:0"
        np.testing.assert_array_equal(value.to_host(), 64 * x)
        assert fake.copies == 5 and fake.replays == 3  # every captured call copied its device feed in


def test_cuda_graphs_turned_off_or_refused_by_onnxruntime_run_plain_bound_calls(fake, tmp_path):
    x = np.ones((1, 4), np.float32)
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda", cuda_graphs=False) as runner:
        for _ in range(4):
            np.testing.assert_array_equal(runner.infer({"x": x})["y"], 2 * x)
        assert "enable_cuda_graph" not in fake.sessions[-1].asked[0][1]
        assert runner.cuda_graphs == "off: turned off (cuda_graphs=False)"
    fake.refuse_cuda_graphs = True
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda") as runner:
        for _ in range(4):
            np.testing.assert_array_equal(runner.infer({"x": x})["y"], 2 * x)
        assert runner.cuda_graphs.startswith("off: ONNX Runtime refused CUDA graphs for this graph (This session "
                                             "cannot use the graph capture feature")
    assert fake.captures == 0
    assert OnnxRuntimeRunner(doubling_spec(tmp_path)).load().cuda_graphs == "off: not on the CPU"


def test_a_failed_capture_turns_capture_off_without_retrying(fake, tmp_path):
    fake.fail_capture = True
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda") as runner:
        for call in range(6):
            x = np.full((3, 4), call + 1, np.float32)
            np.testing.assert_array_equal(runner.infer({"x": x})["y"], 2 * x)
        assert runner.cuda_graphs == ("off: capture failed (CUDA failure 901: operation not permitted when stream "
                                      "is capturing)")
        # the first call measured, the second's capture failed and it ran again uncaptured, the rest never tried
        assert runner._graphs.uncaptured_runs == 6 and (fake.capture_attempts, fake.captures) == (1, 0)


def test_cuda_opens_the_fused_graph_of_this_onnxruntime_and_the_cpu_the_plain_one(fake, tmp_path):
    spec = doubling_spec(tmp_path, [fused_graph(tmp_path, "1.98.0", "model-cuda-old.onnx"),
                                    fused_graph(tmp_path, fake.__version__)])
    with OnnxRuntimeRunner(spec, device="cuda") as runner:
        assert fake.sessions[-1].model == str(tmp_path / "unet" / "model-cuda-0123456789abcdef.onnx")
        assert runner.source == "unet/model-cuda-0123456789abcdef.onnx (ONNX Runtime CUDA fusions)"
    with OnnxRuntimeRunner(spec, device="cpu") as runner:
        assert fake.sessions[-1].model == str(spec.onnx)
        assert runner.source == "unet/model.onnx (plain graph: the fused one runs on CUDA only)"
    with OnnxRuntimeRunner(doubling_spec(tmp_path, [fused_graph(tmp_path, "1.98.0")]), device="cuda") as runner:
        assert fake.sessions[-1].model == str(spec.onnx)
        assert runner.source == ("unet/model.onnx (plain graph: the fused graph was made by onnxruntime 1.98.0, this "
                                 "is 1.99.0; run `genrt build DIR --trt onnxruntime-cuda` again)")
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda") as runner:
        assert runner.source.endswith("(plain graph: no fused graph, `genrt build DIR --trt onnxruntime-cuda` "
                                      "makes one)")


def test_a_corrupted_fused_graph_is_refused_naming_the_rebuild(fake, tmp_path):
    record = fused_graph(tmp_path, fake.__version__)
    record.path.write_bytes(b"changed")
    with pytest.raises(ManifestError, match=r"model-cuda-0123456789abcdef.onnx is corrupted.*--trt onnxruntime-cuda"):
        OnnxRuntimeRunner(doubling_spec(tmp_path, [record]), device="cuda").load()


def test_with_cuda_python_a_cuda_session_runs_on_the_runners_stream_timed_by_cuda_events(fake, monkeypatch, tmp_path):
    cudart = fake.cudart = FakeCudart()
    monkeypatch.setattr(cuda_stream, "cuda_runtime_or_none", lambda: cudart)
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda", device_id=1) as runner:
        stream = runner._stream.handle
        assert fake.sessions[0].asked[0][1]["user_compute_stream"] == str(stream)
        assert ("cudaSetDevice", 1) in [(call[0], call[2]) for call in cudart.calls if call[0] == "cudaSetDevice"]
        for _ in range(3):
            runner.infer({"x": np.ones((1, 4), np.float32)})
        assert runner.device_seconds == pytest.approx(3 * 2.0e-3)  # three runs on the fake GPU clock
        records = [call for call in cudart.calls if call[0] == "cudaEventRecord"]
        assert len(records) == 6 and {call[3] for call in records} == {stream}
    assert "cudaStreamDestroy" in cudart.names()
    monkeypatch.setattr(cuda_stream, "cuda_runtime_or_none", lambda: None)
    with OnnxRuntimeRunner(doubling_spec(tmp_path), device="cuda") as runner:
        assert runner.device_seconds is None and "user_compute_stream" not in fake.sessions[-1].asked[0][1]
