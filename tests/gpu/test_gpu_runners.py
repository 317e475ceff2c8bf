"""Device-tensor runners and the resident loops on a real GPU (skipped without one; tests/gpu/conftest.py fails
them on a GPU without a GPU backend): outputs stay on the GPU, the loops take any runner (ONNX Runtime CUDA and
TensorRT, whose step graphs are built into engines in-process), the VQGAN prior's first call binds its empty
cache, static engines are replayed as CUDA graphs, and a runner serves another thread."""

import shutil
import threading

import numpy as np
import pytest

import genrt.runtime
from genrt.export.engine import BuildSettings, build_engines
from genrt.export.folder import export_folder
from genrt.export.ldm import plan as ldm_plan
from genrt.export.options import ExportOptions
from genrt.export.vqgan import plan as vqgan_plan
from genrt.manifest import read_manifest
from genrt.runtime.backends import Runners
from genrt.runtime.backends.onnxruntime import CUDA_PROVIDER, OrtTensor, cuda_available
from genrt.runtime.backends.tensorrt import RTX_NO_CAPTURE, CudaTensor
from tests.conftest import relative_error
from tests.gpu.test_gpu_backends import _engine_settings

pytestmark = pytest.mark.gpu
BACKENDS = ["onnxruntime-cuda", "tensorrt"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_runners")
    options = ExportOptions(random_weights=True, seed=0)
    export_folder(ldm_plan("tiny", "fp32", options), root / "ldm")
    export_folder(vqgan_plan("tiny", "fp32", options), root / "vqgan")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def ready(backend, folder):
    """Skip a backend that is not installed; build the engines TensorRT needs."""
    if backend == "onnxruntime-cuda" and not cuda_available():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'genrt[gpu]')")
    if backend == "tensorrt":
        build_engines(folder, _engine_settings())


def test_onnxruntime_cuda_outputs_stay_on_the_gpu(exports):
    ready("onnxruntime-cuda", exports / "ldm")
    with Runners(read_manifest(exports / "ldm"), ["vae_decoder"], backend="onnxruntime-cuda") as runners:
        decoder = runners["vae_decoder"]
        assert decoder._session.get_providers()[0] == CUDA_PROVIDER
        latent = np.random.default_rng(0).standard_normal((1, 4, 16, 16)).astype(np.float32)
        on_gpu = decoder.infer({"latent": decoder.upload(latent)}, to_host=False)["image"]
        assert isinstance(on_gpu, OrtTensor) and on_gpu.device == "cuda:0"
        assert on_gpu.value.device_name().lower() == "cuda"
        np.testing.assert_array_equal(on_gpu.to_host(), decoder.infer({"latent": latent})["image"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_resident_ldm_loop_matches_the_host_loop_on_the_same_gpu_backend(exports, backend):
    ready(backend, exports / "ldm")
    call = dict(num_inference_steps=4, guidance_scale=5.0, seed=3)
    results = {}
    for resident in (False, True):
        with genrt.runtime.load(exports / "ldm", backend=backend, sampler="euler_ancestral", resident=resident) as pipe:
            assert pipe.backend == backend and pipe.resident == resident
            results[resident] = pipe(["a red cube", "a cat"], **call).images
    difference = np.abs(results[True].astype(int) - results[False].astype(int)).max()
    assert results[True].shape == (2, 32, 32, 3) and difference <= 1, difference


@pytest.mark.parametrize("backend", BACKENDS)
def test_resident_vqgan_cache_gives_the_host_loop_codes(exports, backend):
    """The first prior call binds a zero-byte cache; every later one feeds back the device cache."""
    ready(backend, exports / "vqgan")
    images = {}
    for resident in (False, True):
        with genrt.runtime.load(exports / "vqgan", backend=backend, resident=resident) as pipe:
            images[resident] = pipe([3, 7], grid=(6, 8), seed=4, temperature=0.7, top_k=6).images
    np.testing.assert_array_equal(images[True], images[False])
    assert images[True].std() > 1


def test_static_tensorrt_engine_is_replayed_as_a_cuda_graph_from_another_thread(exports, tmp_path):
    folder = tmp_path / "ldm"
    shutil.copytree(exports / "ldm", folder)
    settings = _engine_settings()
    build_engines(folder, BuildSettings(flavour=settings.flavour, compute_capabilities=settings.compute_capabilities,
                                        static=True), components=["vae_decoder"])
    manifest = read_manifest(folder)
    shape = manifest.component("vae_decoder").profile["latent"].opt
    latent = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with Runners(manifest, ["vae_decoder"], backend="tensorrt") as runners:
        decoder = runners["vae_decoder"]
        outputs = [decoder.infer({"latent": latent})["image"] for _ in range(5)]
        device_output = decoder.infer({"latent": decoder.upload(latent)}, to_host=False)["image"]
        assert isinstance(device_output, CudaTensor)
        np.testing.assert_array_equal(device_output.to_host(), outputs[0])
        if settings.flavour == "tensorrt":
            assert decoder.graphs.disabled is None and decoder.graphs.graphs == 2
        else:
            assert decoder.graphs.disabled == RTX_NO_CAPTURE
        threaded = {}
        worker = threading.Thread(target=lambda: threaded.update(decoder.infer({"latent": latent})))
        worker.start()
        worker.join()
    for output in outputs[1:] + [threaded["image"]]:
        np.testing.assert_array_equal(output, outputs[0])
    with genrt.runtime.load(exports / "ldm", backend="onnxruntime-cpu") as cpu:
        reference = cpu.runners["vae_decoder"].infer({"latent": latent})["image"]
    assert relative_error(outputs[0], reference) < 1e-4
