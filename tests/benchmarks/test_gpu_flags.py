"""benchmarks.gpu_flags and benchmarks.pipeline ask only for the GPU backends installed, and fail before any timing
when there is none (GPU probes faked on this CPU machine)."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks import gpu_flags, pipeline
from genrt.errors import InputError


@pytest.fixture
def gpu(monkeypatch):
    """A faked CUDA torch whose genrt backends the test sets (``gpu.backends``, ``gpu.engines``)."""

    class Gpu:
        backends: list[str] = []
        engines: InputError | None = None  # what engine_settings raises (None: a flavour serves this GPU)

    def engine_settings():
        if Gpu.engines is not None:
            raise Gpu.engines
        return "settings"

    import benchmarks.compare_backends as compare_backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(compare_backends, "runtime_backends", lambda device: list(Gpu.backends))
    monkeypatch.setattr(pipeline, "runtime_backends", lambda device: list(Gpu.backends))
    monkeypatch.setattr(pipeline, "engine_settings", engine_settings)
    return Gpu


@pytest.mark.parametrize("backends, engines, flags", [
    (["onnxruntime-cuda", "tensorrt"], None, ["--engines"]),
    (["onnxruntime-cuda"], None, []),  # no TensorRT installed: not asked for
    (["onnxruntime-cuda", "tensorrt"], InputError("TensorRT-RTX cannot build engines for this GPU"), []),  # Hopper
    ([], None, []),
])
def test_engines_are_asked_for_only_where_a_tensorrt_flavour_serves_this_gpu(gpu, capsys, backends, engines, flags):
    gpu.backends, gpu.engines = backends, engines
    assert gpu_flags.pipeline_flags() == flags
    err = capsys.readouterr().err
    assert ("no TensorRT rows" in err) == (not flags)
    if engines is not None:
        assert "TensorRT-RTX cannot build engines for this GPU" in err


def test_without_cuda_torch_no_engines_are_asked_for(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_flags.pipeline_flags() == []
    assert "no CUDA GPU" in capsys.readouterr().err


def test_pipeline_refuses_a_gpu_without_any_genrt_backend_before_timing(gpu):
    gpu.backends = []
    start = time.perf_counter()
    with pytest.raises(InputError, match="no genrt GPU backend is installed.*genrt\\[gpu\\]"):
        pipeline.main(["--family", "ldm", "--config", "tiny", "--device", "cuda", "--steps", "1"])
    assert time.perf_counter() - start < 5
    gpu.backends = ["tensorrt"]  # TensorRT installed but not asked for (--engines): nothing left to time
    with pytest.raises(InputError, match="no genrt GPU backend is installed"):
        pipeline.main(["--family", "ldm", "--config", "tiny", "--device", "cuda", "--steps", "1"])
