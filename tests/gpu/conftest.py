"""GPU tests need a GPU backend: on a machine with an NVIDIA GPU but none installed, every test here fails.

Skipping them would make the suite look green on exactly the machine they are for. ``tests/conftest.py``
skips them where there is no GPU at all.
"""

from __future__ import annotations

import pytest

NO_BACKEND = ("an NVIDIA GPU is present but no GPU backend is installed: pip install 'genrt[gpu]' "
              "(onnxruntime-gpu), or 'genrt[trt]' / 'genrt[trt-rtx]' (TensorRT with cuda-python)")


def probe() -> tuple[bool, list[str]]:
    """(an NVIDIA GPU is present, the GPU backends that can run on it here)."""
    from genrt.runtime.backends.onnxruntime import cuda_available
    from genrt.runtime.backends.tensorrt import available_flavours
    from tests.conftest import HAS_GPU

    return HAS_GPU, (["onnxruntime-cuda"] if cuda_available() else []) + available_flavours()


@pytest.fixture(scope="session")
def gpu_backends() -> list[str]:
    """The GPU backends installed; fails every test that uses it when a GPU has none."""
    present, backends = probe()
    if present and not backends:
        pytest.fail(NO_BACKEND, pytrace=False)
    return backends


@pytest.fixture(autouse=True)
def require_a_gpu_backend(gpu_backends) -> list[str]:
    """Every GPU test depends on :func:`gpu_backends`."""
    return gpu_backends
