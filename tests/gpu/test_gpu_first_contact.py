"""Issue 14's first-contact points on a real GPU (skipped without one; tests/gpu/conftest.py fails them on a GPU
without a GPU backend): ONNX Runtime CUDA in a process that never imports torch (``preload_dlls``, the providers a
session really got), ``backend="auto"`` choosing the fastest backend this GPU runs and saying why, engines that
record the GPU they were built for (or TensorRT-RTX refusing a GPU it cannot target), and ``genrt doctor``.
Their CPU-side counterparts, with the libraries faked: tests/runtime/test_runner_cuda_checks.py,
tests/export/test_engine_targets.py, tests/export/test_engine_tensorrt.py, tests/test_doctor.py."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import genrt.runtime
from genrt.cli import main
from genrt.export.engine import build_engines
from genrt.export.targets import RTX_COMPUTE_CAPABILITIES
from genrt.manifest import read_manifest
from genrt.runtime.backends.onnxruntime import cuda_available
from tests.gpu.test_gpu_backends import _compute_capability, _engine_settings
from tests.gpu.test_gpu_runners import exports  # noqa: F401 (a fixture)
from tests.torch_blocker import TORCH_BLOCKER

pytestmark = pytest.mark.gpu

CHILD = TORCH_BLOCKER + textwrap.dedent("""
    import numpy as np
    from genrt.manifest import read_manifest
    from genrt.runtime.backends import Runners

    folder = sys.argv[1]
    latent = np.random.default_rng(0).standard_normal((1, 4, 16, 16)).astype(np.float32)
    with Runners(read_manifest(folder), ["vae_decoder"], backend="onnxruntime-cuda") as runners:
        providers = runners["vae_decoder"]._session.get_providers()
        image = runners["vae_decoder"].infer({"latent": latent})["image"]
    with Runners(read_manifest(folder), ["vae_decoder"], backend="onnxruntime-cpu") as runners:
        reference = runners["vae_decoder"].infer({"latent": latent})["image"]
    rel = float(np.abs(image - reference).max() / np.abs(reference).max())
    print(json.dumps({"attempts": attempts, "torch": "torch" in sys.modules, "providers": providers, "rel": rel}))
""")


def test_onnxruntime_cuda_runs_in_a_process_that_never_imports_torch(exports):  # noqa: F811
    if not cuda_available():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'genrt[gpu]')")
    completed = subprocess.run([sys.executable, "-c", CHILD, str(exports / "ldm")], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [] and report["torch"] is False
    assert report["providers"][0] == "CUDAExecutionProvider"  # the libraries came from preload_dlls, not torch
    assert report["rel"] < 1e-4  # fp32, TF32 off


def test_auto_takes_engines_for_this_gpu_else_onnxruntime_cuda_and_says_why(exports, tmp_path):  # noqa: F811
    folder = tmp_path / "ldm"
    shutil.copytree(exports / "ldm", folder)
    if cuda_available():
        with genrt.runtime.load(folder, backend="auto") as pipe:
            assert pipe.backend == "onnxruntime-cuda"
            assert "not tensorrt: no engines built for" in pipe.choice.reason
    build_engines(folder, _engine_settings())
    with genrt.runtime.load(folder, backend="auto") as pipe:
        assert pipe.backend == "tensorrt" and pipe.choice.reason == "auto: engines for this GPU"
        image = pipe("a red cube", num_inference_steps=2, seed=0).images
    assert image.shape == (1, 32, 32, 3) and image.std() > 0


def test_genrt_build_auto_records_this_gpu_or_refuses_naming_what_runs_here(exports, tmp_path, capsys):  # noqa: F811
    local = _compute_capability()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_rtx = importlib.util.find_spec("tensorrt_rtx") is not None
    if not (has_trt or has_rtx):
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    folder = tmp_path / "ldm"
    shutil.copytree(exports / "ldm", folder)
    code = main(["build", str(folder), "--trt", "auto", "--components", "vae_decoder"])
    if not has_trt and local not in RTX_COMPUTE_CAPABILITIES:  # Hopper with TensorRT-RTX only
        assert code == 2 and "--trt tensorrt" in capsys.readouterr().err
        return
    assert code == 0
    (engine,) = read_manifest(folder).component("vae_decoder").tensorrt_engines
    assert engine.flavour == ("tensorrt" if has_trt else "tensorrt_rtx")
    assert engine.compute_capabilities == (local,)  # never [] (any GPU), never a portable set it cannot run here


def test_doctor_reports_this_gpu_and_every_self_test_passes():
    completed = subprocess.run([sys.executable, "-m", "genrt.cli", "doctor", "--json"], capture_output=True,
                               text=True, timeout=600)
    report = json.loads(completed.stdout)
    assert report["gpu"]["present"] and report["gpu"]["compute_capability"] == _compute_capability()
    assert report["gpu"]["driver_version"] and report["date"]
    tests = {test["backend"]: test for test in report["self_tests"]}
    assert all(test["passed"] for test in tests.values()), tests
    if cuda_available():
        ort = next(library for library in report["libraries"] if library["name"] == "onnxruntime")
        assert ort["facts"]["cuda_session_providers"][0] == "CUDAExecutionProvider"
        assert tests["onnxruntime-cuda"]["rel"] < tests["onnxruntime-cuda"]["tolerance"] == 1e-4
    assert completed.returncode == 0 and report["ok"]
    assert np.isfinite([test["median_ms"] for test in tests.values() if test["median_ms"] is not None]).all()
