"""The Makefile's GPU targets run GPU_PYTHON, never the CPU .venv, and bench-gpu asks only for installed backends."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("target", ["test-gpu", "bench-gpu", "gpu-check"])
def test_gpu_targets_refuse_to_run_without_gpu_python(target):
    result = make(target, "GPU_PYTHON=")
    assert result.returncode == 2
    assert "make: set GPU_PYTHON=/path/to/python, a Python whose torch has CUDA" in result.stderr
    assert ".venv" not in result.stdout  # nothing ran


def test_gpu_targets_run_gpu_python_and_bench_gpu_takes_its_flags_from_gpu_flags():
    commands = make("-n", "test-gpu", "bench-gpu", "gpu-check", "GPU_PYTHON=/opt/cuda-python/bin/python").stdout
    lines = [line for line in commands.splitlines() if "/opt/cuda-python/bin/python -m" in line]
    assert any("-m pytest -q -m gpu tests/gpu" in line for line in lines)
    assert any("flags=$(/opt/cuda-python/bin/python -m benchmarks.gpu_flags) || exit 2" in line for line in lines)
    pipeline_runs = [line for line in lines if "-m benchmarks.pipeline" in line]
    assert len(pipeline_runs) == 3 and all(line.rstrip(" \\").endswith("$flags") for line in pipeline_runs)
    assert not any("--engines" in line for line in commands.splitlines())
    assert "GPU_PYTHON=/opt/cuda-python/bin/python OUT=benchmarks/results/gpu-check bash benchmarks/gpu_check.sh" \
        in commands
    assert ".venv/bin/python" not in commands


def test_train_demo_trains_every_family_at_one_thread_and_imagen_waits_for_ldm_only_there():
    commands = make("-n", "train-demo").stdout
    recipes = [line for line in commands.splitlines() if "-m genrt.sdk.train.recipes." in line]
    assert [line.split("recipes.")[1].split()[0] for line in recipes] == ["ldm_shapes", "vqgan_shapes", "imagen_shapes"]
    assert all(line.startswith("OMP_NUM_THREADS=1 ") for line in recipes)
    assert "cp -r out/train-demo/imagen-shapes/stage_I out/train-demo/imagen-shapes/stage_II models/imagen-shapes/" \
        in commands
    # under -j2 imagen runs after ldm (beside vqgan); make train-imagen alone trains imagen only
    assert "train-imagen: .venv/.installed | train-ldm" in make("-pn", "train-demo").stdout.splitlines()
    alone = make("-n", "train-imagen").stdout
    assert "imagen_shapes" in alone and "ldm_shapes" not in alone
