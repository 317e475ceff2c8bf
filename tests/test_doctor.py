"""`genrt doctor` on this machine (no GPU), and with the GPU and ONNX Runtime's CUDA provider faked."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest

from genrt import doctor
from genrt.errors import GenrtError


def _doctor_json(*flags: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "genrt.cli", "doctor", "--json", *flags], capture_output=True,
                            text=True, timeout=600)
    return result.returncode, json.loads(result.stdout)


def _library(report: dict, name: str) -> dict:
    return next(library for library in report["libraries"] if library["name"] == name)


HOPPER = doctor.Gpu(True, "NVIDIA H200", "9.0", "580.65.06", "143771 MiB", 13000)


def test_probe_reports_no_gpu_and_the_installed_backends():
    import onnxruntime

    code, report = _doctor_json("--no-self-test")
    assert code == 0 and report["ok"] and report["self_tests"] == []
    assert report["gpu"]["present"] is False
    ort = _library(report, "onnxruntime")
    assert ort["version"] == onnxruntime.__version__ and ort["usable"]
    assert ort["facts"]["compiled_providers"] == onnxruntime.get_available_providers()
    rtx = _library(report, "tensorrt_rtx")
    if rtx["version"] is not None:
        assert rtx["usable"] and "no GPU here" in rtx["detail"]
        assert "8.6" in rtx["facts"]["targets"] and "9.0" not in rtx["facts"]["targets"]
    assert _library(report, "tensorrt")["usable"] is False  # a GPU-only library, and no GPU


def test_self_test_checks_onnxruntime_cpu_against_pytorch_and_times_it():
    code, report = _doctor_json()
    tests = {test["backend"]: test for test in report["self_tests"]}
    cpu = tests["onnxruntime-cpu"]
    assert cpu["passed"] and 0 <= cpu["rel"] < cpu["tolerance"] == 1e-4
    assert 0 < cpu["median_ms"] < 10_000
    assert cpu["detail"] == "unet/model.onnx; CUDA graphs off: not on the CPU"
    assert "onnxruntime-cuda fused" not in tests  # no CUDA here
    if _library(report, "tensorrt_rtx")["version"] is not None:
        build = tests["tensorrt_rtx build"]
        assert build["passed"] and build["median_ms"] > 0 and "no GPU to run it" in build["detail"]
    assert code == 0 and report["ok"]


def test_on_hopper_tensorrt_rtx_is_reported_unusable_and_names_what_runs():
    pytest.importorskip("tensorrt_rtx")
    rtx = doctor.probe_tensorrt("tensorrt_rtx", HOPPER)
    assert not rtx.usable and "compute capability 9.0" in rtx.detail
    assert "tensorrt or onnxruntime-cuda" in rtx.detail


def test_a_cuda_session_that_falls_back_to_the_cpu_is_reported_unusable(monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    import genrt.runtime.backends.onnxruntime as ort_backend

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])

    def fell_back(model, device, **options):
        raise GenrtError("ONNX Runtime fell back to CPUExecutionProvider: its CUDA provider did not load",
                         fix="pip install 'genrt[gpu]'")

    monkeypatch.setattr(ort_backend, "open_session", fell_back)
    library = doctor.probe_onnxruntime(HOPPER)
    assert library.detail.startswith("CUDA unusable: ONNX Runtime fell back to CPUExecutionProvider")
    assert "cuda_session_providers" not in library.facts
    monkeypatch.setattr(ort_backend, "open_session",
                        lambda model, device, **options: type("S", (), {"get_providers": lambda self: [
                            "CUDAExecutionProvider", "CPUExecutionProvider"]})())
    library = doctor.probe_onnxruntime(HOPPER)
    assert library.detail == "CUDA and CPU" and library.facts["cuda_session_providers"][0] == "CUDAExecutionProvider"
    assert library.facts["cuda_graphs"].startswith("CUDA sessions take enable_cuda_graph")
    assert "; cuda_graphs: CUDA sessions take enable_cuda_graph" in doctor.format_report(
        doctor.Report("0", "3", HOPPER, (library,), ()))

    def no_graphs(model, device, cuda_graph=False, **options):
        if cuda_graph:
            raise RuntimeError("This session cannot use the graph capture feature as requested by the user")
        return type("S", (), {"get_providers": lambda self: ["CUDAExecutionProvider", "CPUExecutionProvider"]})()

    monkeypatch.setattr(ort_backend, "open_session", no_graphs)
    library = doctor.probe_onnxruntime(HOPPER)
    assert library.facts["cuda_graphs"] == ("refused: This session cannot use the graph capture feature as "
                                            "requested by the user")


def test_tensorrt_flavours_report_how_their_engines_use_cuda_graphs():
    rtx = pytest.importorskip("tensorrt_rtx")
    ampere = doctor.Gpu(True, "NVIDIA RTX A6000", "8.6", "580.65.06", "49140 MiB", 13000)
    library = doctor.probe_tensorrt("tensorrt_rtx", ampere)
    assert library.usable and hasattr(rtx, "CudaGraphStrategy")
    assert library.facts["cuda_graphs"].startswith("captured by TensorRT-RTX's runtime (cuda_graph_strategy "
                                                   "WHOLE_GRAPH_CAPTURE")
    assert "cuda_graphs: captured by TensorRT-RTX's runtime" in doctor.format_report(
        doctor.Report("0", "3", ampere, (library,), ()))


def test_json_out_writes_the_dated_report_beside_the_text(tmp_path):
    out = tmp_path / "doctor.json"
    result = subprocess.run([sys.executable, "-m", "genrt.cli", "doctor", "--no-self-test", "--json-out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    date = datetime.datetime.fromisoformat(report["date"])
    assert date.tzinfo is not None and abs(datetime.datetime.now(datetime.timezone.utc) - date).total_seconds() < 600
    assert report["gpu"] == {"present": False, "name": None, "compute_capability": None, "driver_version": None,
                             "memory": None, "cuda_driver_api": None, "cuda_runtime": None}
    assert {library["name"] for library in report["libraries"]} == {"onnxruntime", "tensorrt", "tensorrt_rtx",
                                                                   "cuda.bindings"}
    assert result.stdout.splitlines()[0] == f"genrt {report['genrt']}, Python {report['python']}, {report['date']}"
    assert "GPU: none" in result.stdout
