"""The TensorRT runner on faked GPU libraries (tests/runtime/fake_gpu.py): device tensors in and out with
persistent, alternating buffers, zero-byte tensors bound to real allocations, cudaSetDevice on every calling
thread, the stream as an int handle, one stream per runner with the runners' work ordered by events, and the
CUDA-graph state machine (eager, capture, replay; a failed capture is never retried and never leaves the
stream capturing; TensorRT-RTX captured by its own runtime, not by genrt). The real thing is
tests/gpu/test_gpu_runners.py."""

import threading
from pathlib import Path

import numpy as np
import pytest

import genrt.runtime.backends.tensorrt as trt_backend
import genrt.runtime.backends.trt_logger as trt_logger
from genrt.errors import GenrtError
from genrt.manifest import ComponentEntry, EngineRecord, TensorSpec
from genrt.runtime.backends.tensorrt import MIN_ALLOCATION, RTX_NO_CAPTURE, CudaTensor, TensorRTDevice, TensorRTRunner
from tests.runtime.fake_gpu import CAPTURE_INVALIDATED, FakeCudart, FakeTensorRT


@pytest.fixture
def fakes(monkeypatch):
    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    real_require = trt_backend.require
    monkeypatch.setattr(trt_backend, "cuda_runtime", lambda: cudart)
    monkeypatch.setattr(trt_backend, "require",
                        lambda module, extra: trt if module in ("tensorrt", "tensorrt_rtx") else real_require(module, extra))
    monkeypatch.setattr(trt_logger, "_LOGGERS", {})
    trt_backend.available_flavours()  # the fakes answer the availability check too
    return cudart, trt


def make_spec(tmp_path, static=False, flavour="tensorrt", capabilities=("8.9",)):
    plan = tmp_path / "prior.plan"
    plan.write_bytes(b"fake plan")
    engine = EngineRecord(path=plan, key="k", flavour=flavour, trt_version=FakeTensorRT.__version__,
                          compute_capabilities=capabilities, static=static, sha256=None)
    return ComponentEntry(name="prior", onnx=tmp_path / "prior.onnx", external_data=None, sha256="",
                          inputs=(TensorSpec("x", "float32", ("B", "N")), TensorSpec("past", "float32", ("B", "P"))),
                          outputs=(TensorSpec("y", "float32", ("B", "N")), TensorSpec("present", "float32", ("B", "Q"))),
                          profile={}, fp32_islands=(), engines=(engine,))


@pytest.fixture
def runner(fakes, tmp_path):
    device = TensorRTDevice(0)
    with TensorRTRunner(make_spec(tmp_path), device, ["tensorrt"]) as opened:
        yield opened
    device.close()


def test_host_feeds_and_an_empty_cache_bind_real_allocations(fakes, runner):
    cudart, _ = fakes
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = runner.infer({"x": x, "past": np.zeros((2, 0), np.float32)})
    np.testing.assert_array_equal(out["y"], 2 * x)
    np.testing.assert_array_equal(out["present"], x)
    assert all(address for address in runner._context.addresses.values())  # the zero-byte past too
    assert min(size for name, _, size, *_ in cudart.calls if name == "cudaMalloc") >= MIN_ALLOCATION


def test_the_cache_stays_on_the_device_between_calls(fakes, runner):
    cudart, _ = fakes
    rng = np.random.default_rng(0)
    steps = [rng.standard_normal((2, 1)).astype(np.float32) for _ in range(6)]
    cache = runner.upload(np.zeros((2, 0), np.float32))
    assert isinstance(cache, CudaTensor) and cache.shape == (2, 0) and cache.device == "cuda:0"
    seen = []
    del cudart.calls[:]
    for x in steps:
        out = runner.infer({"x": x, "past": cache}, to_host=("y",))
        np.testing.assert_array_equal(out["y"], 2 * x)
        assert isinstance(out["present"], CudaTensor)
        seen.append(out["present"].ptr)
        cache = out["present"]
    np.testing.assert_array_equal(cache.to_host(), np.concatenate(steps, axis=1))
    # only y (8 bytes) per call and the final cache (48 bytes) came to the host; the cache never did in between
    down = [size for name, _, kind, size, _ in (c for c in cudart.calls if c[0] == "cudaMemcpyAsync") if kind == "D2H"]
    assert down == [8] * len(steps) + [48]
    # two buffers alternate (after the growth of the first calls); the feed is never the output being written
    assert seen[-1] == seen[-3] and seen[-2] == seen[-4] and seen[-1] != seen[-2]


def test_every_entry_point_sets_the_device_on_the_calling_thread(fakes, runner):
    cudart, _ = fakes
    x = np.ones((1, 2), np.float32)
    result = {}
    worker = threading.Thread(target=lambda: result.update(runner.infer({"x": x, "past": np.zeros((1, 0), np.float32)})))
    worker.start()
    worker.join()
    thread_calls = [call for call in cudart.calls if call[1] == worker.ident]
    assert thread_calls[0][:1] + thread_calls[0][2:] == ("cudaSetDevice", 0)
    np.testing.assert_array_equal(result["y"], 2 * x)


def test_one_stream_per_runner_and_the_next_runner_waits_for_the_last(fakes, tmp_path):
    cudart, _ = fakes
    device = TensorRTDevice(0)
    first = TensorRTRunner(make_spec(tmp_path), device, ["tensorrt"]).load()
    second = TensorRTRunner(make_spec(tmp_path), device, ["tensorrt"]).load()
    assert first.stream_handle != second.stream_handle and type(first.stream_handle) is int
    x = np.ones((1, 2), np.float32)
    out = first.infer({"x": x, "past": np.zeros((1, 0), np.float32)}, to_host=False)
    del cudart.calls[:]
    chained = second.infer({"x": out["y"], "past": out["present"]})  # another runner's device outputs
    np.testing.assert_array_equal(chained["present"], np.concatenate([x, 2 * x], axis=1))
    waits = [call for call in cudart.calls if call[0] == "cudaStreamWaitEvent"]
    assert waits and waits[0][2:] == (second.stream_handle, int(first._event))
    first.close()
    second.close()
    device.close()
    assert cudart.memory == {}  # every buffer, upload and the shared block freed


def run_calls(runner, count, x):
    for _ in range(count):
        out = runner.infer({"x": x, "past": np.full((1, 2), 5, np.float32)})
        np.testing.assert_array_equal(out["y"], 2 * x)
        np.testing.assert_array_equal(out["present"], np.concatenate([np.full((1, 2), 5, np.float32), x], axis=1))


def test_static_engine_is_run_captured_then_replayed(fakes, tmp_path):
    cudart, trt = fakes
    device = TensorRTDevice(0)
    with TensorRTRunner(make_spec(tmp_path, static=True), device, ["tensorrt"]) as runner:
        x = np.array([[1.0, -2.0, 3.0]], np.float32)
        run_calls(runner, 2, x)  # each output-buffer parity runs eagerly once
        assert "cudaStreamBeginCapture" not in cudart.names() and runner.graphs.graphs == 0
        run_calls(runner, 2, x)  # then each is captured
        assert cudart.names().count("cudaStreamBeginCapture") == 2 and runner.graphs.graphs == 2
        assert runner.cuda_graphs == "genrt capture of the static engine (2 graphs so far)"
        del cudart.calls[:]
        runs = trt.engines[0].runs
        run_calls(runner, 3, x * 3)  # replays: no capture, no TensorRT enqueue, the new inputs are read
        assert "cudaStreamBeginCapture" not in cudart.names() and cudart.names().count("cudaGraphLaunch") == 3
        assert trt.engines[0].runs == runs + 3
    device.close()


@pytest.mark.parametrize("failure", ["raises", "end_capture"])
def test_a_failed_capture_is_not_retried_and_ends_the_capture(fakes, tmp_path, failure):
    cudart, trt = fakes
    device = TensorRTDevice(0)
    with TensorRTRunner(make_spec(tmp_path, static=True), device, ["tensorrt"]) as runner:
        if failure == "raises":
            trt.engines[0].fail_in_capture = True
        else:
            cudart.end_capture_error = CAPTURE_INVALIDATED
        x = np.array([[0.5, 4.0]], np.float32)
        run_calls(runner, 6, x)  # correct results throughout: the failed capture's call ran eagerly
        assert cudart.names().count("cudaStreamBeginCapture") == 1
        assert cudart.names().count("cudaStreamEndCapture") == 1 and cudart.capturing == {}
        assert runner.graphs.disabled.startswith("CUDA-graph capture failed")
    device.close()


def test_tensorrt_rtx_engines_are_captured_by_its_own_runtime_not_by_genrt(fakes, tmp_path):
    cudart, trt = fakes
    device = TensorRTDevice(0)
    with TensorRTRunner(make_spec(tmp_path, static=True, flavour="tensorrt_rtx"), device, ["tensorrt_rtx"]) as runner:
        run_calls(runner, 4, np.ones((1, 1), np.float32))
        assert runner.graphs.disabled == RTX_NO_CAPTURE and "cudaStreamBeginCapture" not in cudart.names()
        config = trt.engines[-1].runtime_config
        assert (config.allocation, config.cuda_graph_strategy) == ("user-managed", "whole-graph-capture")
        assert runner.cuda_graphs.startswith("by TensorRT-RTX's runtime (cuda_graph_strategy WHOLE_GRAPH_CAPTURE")
    with TensorRTRunner(make_spec(tmp_path, static=True, flavour="tensorrt_rtx"), device, ["tensorrt_rtx"],
                        cuda_graphs=False) as runner:
        assert trt.engines[-1].runtime_config.cuda_graph_strategy == "disabled"
        assert runner.cuda_graphs == "off: turned off (cuda_graphs=False)"
    with TensorRTRunner(make_spec(tmp_path, static=True), device, ["tensorrt"], cuda_graphs=False) as runner:
        run_calls(runner, 4, np.ones((1, 1), np.float32))
        assert "cudaStreamBeginCapture" not in cudart.names() and trt.engines[-1].runtime_config is None
    device.close()


def test_an_engine_for_another_gpu_is_refused_with_the_rebuild_fix(fakes, tmp_path):
    device = TensorRTDevice(0)
    with pytest.raises(GenrtError, match=r"no engine for this GPU \(compute capability 8.9.*sm 8.6.*genrt build"):
        TensorRTRunner(make_spec(tmp_path, capabilities=("8.6",)), device, ["tensorrt"]).load()
    device.close()


def test_step_graphs_build_into_tensorrt_rtx_engines_without_a_gpu(monkeypatch):
    """The real TensorRT-RTX builder (no GPU needed for an SM target) takes both step graphs with their profiles;
    the DDPM threshold's TopK passes at the base stage's K = 63 and fails above TensorRT's K limit."""
    pytest.importorskip("tensorrt_rtx")
    from genrt.manifest import ShapeRange
    from genrt.runtime.loops.step_graphs import (TENSORRT_TOPK_LIMIT, ddpm_step_graph, guided_step_graph,
                                                 quantile_order_statistics)

    monkeypatch.setattr(trt_logger, "_LOGGERS", {})
    latent = ComponentEntry(name="unet", onnx=Path("unet.onnx"), external_data=None, sha256="",
                            inputs=(TensorSpec("sample", "float16", ("B", 4, "h", "w")),),
                            outputs=(TensorSpec("model_output", "float16", ("B", 4, "h", "w")),),
                            profile={"sample": ShapeRange((1, 4, 8, 8), (2, 4, 16, 16), (8, 4, 32, 32))},
                            fp32_islands=(), engines=())
    graph = guided_step_graph(latent, guided=True)
    assert graph.spec.profile["x"] == ShapeRange((1, 4, 8, 8), (1, 4, 16, 16), (4, 4, 32, 32))
    assert len(trt_backend.build_engine(graph.spec, graph.model, "tensorrt_rtx", "8.6")) > 10_000

    def imagen_unet(size):
        return ComponentEntry(name="base_unet", onnx=Path("base.onnx"), external_data=None, sha256="",
                              inputs=(TensorSpec("sample", "float32", ("B", 3, size, size)),),
                              outputs=(TensorSpec("model_output", "float32", ("B", 6, size, size)),),
                              profile={"sample": ShapeRange((2, 3, size, size), (2, 3, size, size), (4, 3, size, size))},
                              fp32_islands=(), engines=())

    base = ddpm_step_graph(imagen_unet(64), 3, (64, 64), True, 0.995, None)
    assert base.spec.profile["model_output"].max == (4, 6, 64, 64)
    assert len(trt_backend.build_engine(base.spec, base.model, "tensorrt_rtx", "8.9")) > 10_000
    assert quantile_order_statistics(3 * 128 * 128, 0.9)[0] > TENSORRT_TOPK_LIMIT
    too_many = ddpm_step_graph(imagen_unet(128), 3, (128, 128), False, 0.9, None)  # K = 4916
    with pytest.raises(GenrtError, match="base_unet.ddpm_step: tensorrt_rtx c"):
        trt_backend.build_engine(too_many.spec, too_many.model, "tensorrt_rtx", "8.9")


def test_gpu_time_comes_from_cuda_events_on_the_runner_stream_without_a_sync_per_call(fakes, runner):
    cudart, _ = fakes
    x = np.ones((1, 2), np.float32)
    value = runner.upload(x)
    for _ in range(4):
        value = runner.infer({"x": value, "past": np.zeros((1, 0), np.float32)}, to_host=False)["y"]
    assert "cudaEventSynchronize" not in cudart.names() and "cudaStreamSynchronize" not in cudart.names()
    records = [call for call in cudart.calls if call[0] == "cudaEventRecord" and call[3] == runner.stream_handle]
    assert len(records) >= 8  # a start and a stop per call (plus the ordering events)
    assert runner.device_seconds == pytest.approx(4 * 1.5e-3)  # four engine runs on the fake GPU clock
    assert cudart.names().count("cudaEventSynchronize") == 1  # reading waits once, for the last stop event
    np.testing.assert_array_equal(value.to_host(), 16 * x)
    assert runner.device_seconds == pytest.approx(4 * 1.5e-3)  # events are read once, then reused


def test_runtime_and_builds_share_one_tensorrt_logger_that_keeps_errors_outside_builds(fakes, caplog):
    """TensorRT keeps the first logger it is given: runners and genrt build must hand it the same one."""
    from genrt.export.build_control import build_log

    _, trt = fakes
    logger = trt_backend.logger("tensorrt")
    with build_log(trt) as (build_logger, lines):
        assert build_logger is logger
        logger.log(trt.ILogger.Severity.INFO, "tactic chosen")
    assert lines == ["[INFO] tactic chosen"]
    logger.log(trt.ILogger.Severity.INFO, "dropped")
    logger.log(trt.ILogger.Severity.ERROR, "deserialization failed")
    assert [record.getMessage() for record in caplog.records] == ["fake_tensorrt: deserialization failed"]
