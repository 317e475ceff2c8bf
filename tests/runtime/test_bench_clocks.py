"""`genrt bench` says which clock measured what: an engine with CUDA events (``device_seconds``) is charged its GPU
time, one without the wall clock; and what each runner opened and how its calls use CUDA graphs. A fake pipeline
whose runners report fixed seconds per call, so the numbers are exact."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from genrt.runtime.bench import bench_pipeline, format_report


class FakeRunner:
    """Per call: ``wall`` seconds of engine_seconds and, with events, ``gpu`` seconds of device_seconds."""

    def __init__(self, wall: float, gpu: float | None, source: str, cuda_graphs: str):
        self.wall, self.gpu, self.source, self.cuda_graphs = wall, gpu, source, cuda_graphs
        self.calls, self.engine_seconds = 0, 0.0
        self._device = None if gpu is None else 0.0

    @property
    def device_seconds(self):
        return self._device

    def call(self):
        self.calls += 1
        self.engine_seconds += self.wall
        if self.gpu is not None:
            self._device += self.gpu


class FakePipeline:
    def __init__(self):
        self.runners = {"unet": FakeRunner(0.010, 0.004, "unet/model.plan (tensorrt 10.99.0)",
                                           "genrt capture of the static engine (2 graphs so far)"),
                        "vae_decoder": FakeRunner(0.020, None, "vae_decoder/model.onnx",
                                                  "off: not on the CPU")}
        self.manifest = SimpleNamespace(family="ldm", config="tiny", precision="fp16", components={
            name: SimpleNamespace(onnx=Path("/nowhere.onnx"), external_data=None, tensorrt_engines=(),
                                  fused_graphs=()) for name in self.runners})
        self.backend = "tensorrt"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass


def generate(pipe):
    for _ in range(3):
        pipe.runners["unet"].call()
    pipe.runners["vae_decoder"].call()
    return SimpleNamespace(images=np.zeros((1, 8, 8, 3), np.uint8), timings={"denoise": 0.05, "total": 0.06})


def test_engine_rows_use_cuda_events_where_the_runner_has_them_and_say_so():
    payload = bench_pipeline(FakePipeline, generate, warmup=1, repeats=2)
    rows = {row["stage"]: row for row in payload["rows"]}
    assert rows["[engine] unet"]["median_ms"] == pytest.approx(12.0)  # 3 calls x 4 ms of GPU time, not 3 x 10 ms wall
    assert rows["[engine] unet"]["ms/call"] == pytest.approx(4.0)
    assert rows["[engine] vae_decoder"]["median_ms"] == pytest.approx(20.0)  # no events: its wall clock
    assert payload["clock"] == {"pipeline": "wall", "components": ["cuda-events", "wall"]}
    assert payload["runners"]["unet"] == {"source": "unet/model.plan (tensorrt 10.99.0)", "clock": "cuda-events",
                                          "cuda_graphs": "genrt capture of the static engine (2 graphs so far)"}
    assert payload["runners"]["vae_decoder"]["clock"] == "wall"
    text = format_report(payload)
    assert ("clocks: pipeline and stages wall, [engine] rows cuda-events / wall (wall: host perf_counter; "
            "cuda-events: GPU time between CUDA events on the engine's stream)") in text
    assert "unet: unet/model.plan (tensorrt 10.99.0); CUDA graphs genrt capture of the static engine" in text
    assert "vae_decoder: vae_decoder/model.onnx; CUDA graphs off: not on the CPU" in text
