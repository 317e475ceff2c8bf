"""Which GPUs `genrt build` targets, for each flavour and machine (the local GPU is faked)."""

from __future__ import annotations

import importlib.util

import pytest

from genrt.errors import InputError
from genrt.export.engine import BuildSettings
from genrt.export.targets import RTX_COMPUTE_CAPABILITIES, RTX_PORTABLE, build_targets, resolve_flavour


@pytest.mark.parametrize("local, expected", [("8.6", ("8.6",)), ("12.0", ("12.0",)), ("7.5", ("7.5",)),
                                             (None, RTX_PORTABLE)])
def test_tensorrt_rtx_targets_the_local_gpu_else_its_portable_set(local, expected):
    assert build_targets("tensorrt_rtx", None, local) == expected


@pytest.mark.parametrize("local", ["9.0", "10.0", "7.0"])
def test_tensorrt_rtx_refuses_a_gpu_it_cannot_serve_and_names_what_runs_there(local):
    with pytest.raises(InputError, match=rf"compute capability {local}.*--trt tensorrt.*onnxruntime-cuda"):
        build_targets("tensorrt_rtx", None, local)


def test_tensorrt_rtx_builds_for_chosen_targets_on_any_machine():
    assert build_targets("tensorrt_rtx", ("8.6", "8.9"), "9.0") == ("8.6", "8.9")
    assert build_targets("tensorrt_rtx", ("12.1",), None) == ("12.1",)


@pytest.mark.parametrize("requested", [("9.0",), ("6.1",), ("8.6", "9.0"), ()])
def test_compute_capability_is_checked_against_tensorrt_rtx_targets(requested):
    with pytest.raises(InputError, match=r"TensorRT-RTX cannot target compute capabilities.*choose from 7.5, 8.0"):
        build_targets("tensorrt_rtx", requested, None)
    with pytest.raises(InputError, match="cannot target"):
        BuildSettings(flavour="tensorrt_rtx", compute_capabilities=requested)


def test_rtx_targets_are_members_of_the_installed_library():
    trt = pytest.importorskip("tensorrt_rtx")
    assert {name for name in RTX_COMPUTE_CAPABILITIES.values()} <= set(trt.ComputeCapability.__members__)
    assert "SM90" not in trt.ComputeCapability.__members__  # why Hopper is refused


def test_standard_tensorrt_builds_for_the_local_gpu_only():
    assert build_targets("tensorrt", None, "9.0") == ("9.0",)
    assert build_targets("tensorrt", ("9.0",), "9.0") == ("9.0",)
    with pytest.raises(InputError, match=r"only for the GPU it runs on \(compute capability 9.0\), not 8.6"):
        build_targets("tensorrt", ("8.6",), "9.0")
    with pytest.raises(InputError, match="needs an NVIDIA GPU to build.*--trt tensorrt_rtx"):
        build_targets("tensorrt", None, None)


def test_auto_picks_standard_tensorrt_only_where_it_is_installed_and_a_gpu_exists(monkeypatch):
    assert resolve_flavour("tensorrt_rtx", "9.0") == "tensorrt_rtx"
    assert resolve_flavour("auto", None) == "tensorrt_rtx"
    installed = {"tensorrt"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert resolve_flavour("auto", "9.0") == "tensorrt"
    installed.clear()
    assert resolve_flavour("auto", "9.0") == "tensorrt_rtx"  # and then build_targets refuses SM 9.0


@pytest.mark.parametrize("workspace", [float("nan"), float("inf"), 0.0, -1.0])
def test_workspace_must_be_a_positive_finite_size(workspace):
    with pytest.raises(InputError, match="--workspace .* positive finite"):
        BuildSettings(workspace_gb=workspace)


def test_bench_engines_refuses_a_gpu_no_installed_flavour_serves_before_any_timing(monkeypatch):
    import time

    import genrt.export.targets as targets
    from benchmarks import pipeline

    monkeypatch.setattr(targets, "local_compute_capability", lambda: "9.0")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no standard TensorRT
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"TensorRT-RTX cannot build engines for this GPU.*--trt tensorrt"):
        pipeline.main(["--family", "ldm", "--config", "tiny", "--device", "cpu", "--steps", "1", "--engines"])
    assert time.perf_counter() - start < 5  # refused up front, not after the PyTorch timing
