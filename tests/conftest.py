"""Shared test fixtures. GPU tests carry ``@pytest.mark.gpu`` and skip without an NVIDIA GPU."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


HAS_GPU = _has_nvidia_gpu()


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|, in float64 (works for torch tensors and numpy arrays)."""
    import numpy as np

    a = np.asarray(actual.detach().cpu().double() if hasattr(actual, "detach") else actual, dtype=np.float64)
    e = np.asarray(expected.detach().cpu().double() if hasattr(expected, "detach") else expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-12))
