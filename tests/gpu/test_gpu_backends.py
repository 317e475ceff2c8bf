"""GPU backends against ONNX Runtime CPU and PyTorch, on tiny exports (skipped without an NVIDIA GPU).

ONNX Runtime CUDA needs onnxruntime-gpu (``genrt[gpu]``); TensorRT needs ``genrt[trt]`` (any data-centre
GPU) or ``genrt[trt-rtx]`` (the compute capabilities TensorRT-RTX targets) plus cuda-python.
"""

import shutil
import subprocess

import numpy as np
import pytest

import genrt.runtime
from genrt.export.engine import RTX_COMPUTE_CAPABILITIES, BuildSettings, build_engines
from genrt.export.folder import export_folder
from genrt.export.ldm import plan
from genrt.export.options import ExportOptions
from genrt.export.parity import check_parity
from genrt.manifest import read_manifest

pytestmark = pytest.mark.gpu


def _compute_capability() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def _engine_settings() -> BuildSettings:
    """Standard TensorRT when installed, else TensorRT-RTX when it targets this GPU, else skip."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        return BuildSettings(flavour="tensorrt", compute_capabilities=())
    capability = _compute_capability()
    if importlib.util.find_spec("tensorrt_rtx") is not None and capability in RTX_COMPUTE_CAPABILITIES:
        return BuildSettings(flavour="tensorrt_rtx", compute_capabilities=(capability,))
    pytest.skip(f"no TensorRT flavour installed that runs on compute capability {capability}")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def export(request, tmp_path_factory):
    precision = request.param
    options = ExportOptions(random_weights=True, seed=0)
    directory = tmp_path_factory.mktemp(f"gpu_{precision}") / "ldm"
    export_folder(plan("tiny", precision, options), directory)
    yield plan("tiny", precision, options), directory, precision
    shutil.rmtree(directory, ignore_errors=True)


def test_onnxruntime_cuda_matches_pytorch(export):
    from genrt.runtime.backends.onnxruntime import cuda_available

    if not cuda_available():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'genrt[gpu]')")
    family_plan, directory, _ = export
    rows = check_parity(read_manifest(directory), family_plan, backends=["onnxruntime-cuda"])
    assert rows and all(row.passed for row in rows), [row for row in rows if not row.passed]


def test_tensorrt_engines_match_pytorch(export):
    family_plan, directory, _ = export
    build_engines(directory, _engine_settings())
    rows = check_parity(read_manifest(directory), family_plan, backends=["tensorrt"])
    assert rows and all(row.passed for row in rows), [row for row in rows if not row.passed]


@pytest.mark.parametrize("backend", ["onnxruntime-cuda", "tensorrt"])
def test_gpu_pipeline_images_match_the_cpu_runtime(export, backend):
    _, directory, precision = export
    if backend == "tensorrt":
        build_engines(directory, _engine_settings())
    else:
        from genrt.runtime.backends.onnxruntime import cuda_available

        if not cuda_available():
            pytest.skip("onnxruntime-gpu is not installed (pip install 'genrt[gpu]')")
    call = dict(num_inference_steps=4, guidance_scale=5.0, seed=3)
    with genrt.runtime.load(directory, backend="onnxruntime-cpu") as cpu:
        expected = cpu(["a red cube", "a cat"], **call).images
    with genrt.runtime.load(directory, backend=backend) as gpu:
        assert gpu.backend == backend
        images = gpu(["a red cube", "a cat"], **call).images
    # Per pixel, out of 255: fp32 as the bound; fp16 kernels differ between CPU and GPU (~1e-3 relative
    # per network), which a few denoising steps amplify.
    bound = 2 if precision == "fp32" else 8
    assert images.shape == expected.shape and images.dtype == np.uint8
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= bound
