"""Where the device-resident loops default on: both GPU backends (ONNX Runtime CUDA and TensorRT), never the CPU;
an explicit resident= always wins. On TensorRT an Imagen stage whose dynamic threshold needs a TopK above
TensorRT's limit keeps the host loop by default (resident=True leaves it to the build to refuse)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

import genrt.runtime.pipelines.common as common
from genrt.runtime.backends.choice import BackendChoice
from genrt.runtime.pipelines.common import DEVICE_BACKENDS, Pipeline, RunnerOptions
from genrt.runtime.pipelines.imagen import ImagenPipeline


class Probe(Pipeline):
    family = "ldm"


@pytest.fixture
def opened_on(monkeypatch):
    """Pipelines whose runners 'open' on the given backend."""
    def install(backend):
        monkeypatch.setattr(common, "Runners", lambda manifest, names, **options: SimpleNamespace(
            choice=BackendChoice(backend, "auto: test"), backend=backend, close=lambda: None))
    return install


MANIFEST = SimpleNamespace(family="ldm", precision="fp16", root=Path("/exports/sd"))


@pytest.mark.parametrize("backend, default", [("onnxruntime-cpu", False), ("onnxruntime-cuda", True),
                                              ("tensorrt", True)])
def test_resident_defaults_on_for_both_gpu_backends_only(opened_on, backend, default):
    opened_on(backend)
    pipe = Probe(MANIFEST, [])
    assert pipe.resident is default and pipe.resident_asked is False
    assert (backend in DEVICE_BACKENDS) is default
    for asked in (True, False):
        pipe = Probe(MANIFEST, [], RunnerOptions(resident=asked))
        assert pipe.resident is asked and pipe.resident_asked is True


@pytest.mark.parametrize("backend, asked, size, fits", [
    ("tensorrt", False, 64, True),  # K = 63 at p = 0.995
    ("tensorrt", False, 1024, False),  # K = 15729 > 3839: the host loop
    ("tensorrt", True, 1024, True),  # asked for: the step graph's build refuses it, naming resident=False
    ("onnxruntime-cuda", False, 1024, True),  # ONNX Runtime's TopK has no such limit
])
def test_an_imagen_stage_beyond_tensorrts_topk_keeps_the_host_loop_by_default(backend, asked, size, fits):
    pipe = SimpleNamespace(backend=backend, resident_asked=asked)
    sampler = SimpleNamespace(dynamic_threshold_percentile=0.995)
    assert ImagenPipeline._step_graph_fits(pipe, sampler, (2, 3, size, size)) is fits
    assert ImagenPipeline._step_graph_fits(pipe, SimpleNamespace(dynamic_threshold_percentile=None),
                                           (2, 3, size, size))
