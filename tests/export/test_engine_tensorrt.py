"""Standard TensorRT builds, with the ``tensorrt`` module faked at its boundary (no GPU here).

The fake records what genrt asks of the builder (flags, profile) and "serializes" an engine whose bytes
name the ONNX graph; its runtime deserializes only such bytes.
"""

from __future__ import annotations

import enum
import sys
import types

import pytest

import genrt.export.engine as engine_module
from genrt.errors import InputError
from genrt.export.engine import BuildSettings, build_engines
from genrt.export.folder import export_folder
from genrt.manifest import read_manifest
from tests.export.toy import toy_encoder_spec, toy_plan

MAGIC = b"fake-trt-engine:"


class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3


class ILogger:
    Severity = Severity

    def __init__(self):
        pass


class IProgressMonitor:
    def __init__(self):
        pass


class BuilderFlag(enum.Enum):
    TF32 = 0


class Config:
    def __init__(self, calls):
        self.flags = {BuilderFlag.TF32}  # TensorRT's default
        self.progress_monitor = None
        self.builder_optimization_level = None
        calls.append(self)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def create_timing_cache(self, data):
        return data

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing = cache

    def get_timing_cache(self):
        return types.SimpleNamespace(serialize=lambda: b"timing")

    def add_optimization_profile(self, profile):
        self.profile = profile


class Parser:
    def __init__(self, network, logger):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path):
        self.network.path = path
        return True


class Builder:
    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags):
        return types.SimpleNamespace(path=None)

    def create_builder_config(self):
        return Config(FAKE.configs)

    def create_optimization_profile(self):
        return types.SimpleNamespace(set_shape=lambda name, low, opt, high: None)

    def build_serialized_network(self, network, config):
        self.logger.log(Severity.INFO, f"building {network.path}")
        assert config.progress_monitor.step_complete("phase", 0) is True
        return MAGIC + network.path.encode()


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        return object() if bytes(data).startswith(MAGIC) else None


FAKE = types.ModuleType("tensorrt")
FAKE.__version__ = "10.99.0"
FAKE.ILogger, FAKE.IProgressMonitor, FAKE.BuilderFlag = ILogger, IProgressMonitor, BuilderFlag
FAKE.Builder, FAKE.OnnxParser, FAKE.Runtime = Builder, Parser, Runtime
FAKE.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
FAKE.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)


@pytest.fixture()
def hopper(monkeypatch):
    """This machine as an H200 (SM 9.0) with standard TensorRT installed."""
    FAKE.configs = []
    monkeypatch.setitem(sys.modules, "tensorrt", FAKE)
    monkeypatch.setattr(engine_module, "local_compute_capability", lambda: "9.0")
    return FAKE


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"trt-{request.param}") / "export"
    export_folder(toy_plan(request.param, [toy_encoder_spec(request.param)]), out)
    return request.param, out


def test_standard_tensorrt_records_the_gpu_it_built_on_and_tf32_only_off_for_fp32(hopper, exported):
    precision, out = exported
    (result,) = build_engines(out, BuildSettings(flavour="tensorrt", compute_capabilities=()))
    assert not result.cache_hit
    (engine,) = [e for e in read_manifest(out).components["toy_encoder"].engines if e.flavour == "tensorrt"]
    assert engine.compute_capabilities == ("9.0",) and engine.trt_version == "10.99.0"
    (config,) = hopper.configs
    assert (BuilderFlag.TF32 in config.flags) == (precision != "fp32")
    assert config.progress_monitor is not None
    assert "[INFO] building" in (out / f"toy_encoder/build-{result.key[:16]}.log").read_text()


def test_a_cached_engine_that_does_not_deserialize_on_this_gpu_is_rebuilt(hopper, exported, monkeypatch):
    _, out = exported
    settings = BuildSettings(flavour="tensorrt", compute_capabilities=())
    build_engines(out, settings)
    builds = len(hopper.configs)
    (hit,) = build_engines(out, settings)
    assert hit.cache_hit and len(hopper.configs) == builds  # it deserialized: nothing was built
    monkeypatch.setattr(Runtime, "deserialize_cuda_engine", lambda self, data: None)  # e.g. a driver update
    (again,) = build_engines(out, settings)
    assert not again.cache_hit and len(hopper.configs) == builds + 1


def test_standard_tensorrt_refuses_another_gpus_compute_capability_and_no_gpu(hopper, exported, monkeypatch):
    _, out = exported
    with pytest.raises(InputError, match=r"builds only for the GPU it runs on \(compute capability 9.0\)"):
        build_engines(out, BuildSettings(flavour="tensorrt", compute_capabilities=("8.6",)))
    monkeypatch.setattr(engine_module, "local_compute_capability", lambda: None)
    with pytest.raises(InputError, match="needs an NVIDIA GPU.*--trt tensorrt_rtx"):
        build_engines(out, BuildSettings(flavour="tensorrt", compute_capabilities=()))
    assert hopper.configs == []
