"""ONNX Runtime CUDA and TensorRT on a real GPU (skipped without one; tests/gpu/conftest.py fails them on a GPU
without a GPU backend): the fused graph is what a CUDA session opens and it matches the plain graph, CUDA graphs
are captured and replayed with the numbers of uncaptured runs, and GPU time comes from CUDA events on both.
Their CPU-side counterparts: tests/runtime/test_ort_cuda_graphs.py, test_runner_tensorrt.py, test_bench_clocks.py."""

import shutil

import numpy as np
import pytest

import genrt.runtime
from genrt.manifest import read_manifest
from genrt.runtime.backends import Runners
from genrt.runtime.loops.step_graphs import guided_step_graph
from tests.conftest import relative_error
from tests.gpu.test_gpu_runners import exports, ready  # noqa: F401 (exports is a fixture)

pytestmark = pytest.mark.gpu


def decoder_feeds(manifest, seed=0) -> dict:
    shape = manifest.component("vae_decoder").profile["latent"].opt
    return {"latent": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def test_onnxruntime_cuda_opens_the_fused_graph_and_matches_the_plain_one(exports, tmp_path):  # noqa: F811
    from genrt.export.cuda_fusion import build_cuda_graphs

    ready("onnxruntime-cuda", exports / "ldm")
    folder = tmp_path / "ldm"
    shutil.copytree(exports / "ldm", folder)
    plain = read_manifest(folder)
    feeds = decoder_feeds(plain)
    with Runners(plain, ["vae_decoder", "unet"], backend="onnxruntime-cuda") as runners:
        assert "plain graph: no fused graph" in runners["vae_decoder"].source
        expected = runners["vae_decoder"].infer(feeds)["image"]
    build_cuda_graphs(folder, ["unet", "vae_decoder"])
    fused = read_manifest(folder)
    with Runners(fused, ["vae_decoder", "unet"], backend="onnxruntime-cuda") as runners:
        for name in ("vae_decoder", "unet"):
            assert runners[name].source.endswith("(ONNX Runtime CUDA fusions)"), runners[name].source
        got = runners["vae_decoder"].infer(feeds)["image"]
    assert relative_error(got, expected) < 1e-3
    call = dict(num_inference_steps=4, guidance_scale=5.0, seed=3)
    with genrt.runtime.load(folder, backend="onnxruntime-cpu") as cpu:
        reference = cpu(["a red cube"], **call).images
    with genrt.runtime.load(folder, backend="onnxruntime-cuda") as gpu:
        images = gpu(["a red cube"], **call).images
    assert np.abs(images.astype(int) - reference.astype(int)).max() <= 2


def test_onnxruntime_cuda_graphs_are_captured_and_replay_the_numbers_of_plain_runs(exports):  # noqa: F811
    ready("onnxruntime-cuda", exports / "ldm")
    manifest = read_manifest(exports / "ldm")
    graph = guided_step_graph(manifest.component("unet"), guided=True)
    rng = np.random.default_rng(2)
    latent = graph.spec.profile["x"].opt  # (B, 4, h, w); the U-Net's output rows are [uncond; cond]
    calls = [{"x": rng.standard_normal(latent).astype(np.float32),
              "model_output": rng.standard_normal((2 * latent[0], *latent[1:])).astype(np.float32),
              "noise": rng.standard_normal(latent).astype(np.float32),
              "coefficients": rng.uniform(0.5, 1.5, 4).astype(np.float32), "guidance": np.float32([7.5])}
             for _ in range(6)]
    results = {}
    for graphs in (False, True):
        with Runners(manifest, ["vae_decoder"], backend="onnxruntime-cuda", cuda_graphs=graphs) as runners:
            step = runners.open_graph(graph)
            results[graphs] = [step.infer(feeds)["x_next"] for feeds in calls]
            decoder = runners["vae_decoder"]
            decoded = [decoder.infer(decoder_feeds(manifest, seed))["image"] for seed in range(5)]
            if graphs:  # the step graph is all CUDA kernels: captured twice (two buffer sets), then replayed
                assert step._graphs.graphs == 2 and step._graphs.uncaptured_runs == 1, step.cuda_graphs
                assert not decoder.cuda_graphs.startswith("off: capture failed"), decoder.cuda_graphs
                print("vae_decoder CUDA graphs:", decoder.cuda_graphs)
            results[graphs, "decoder"] = decoded
    for captured, plain in zip(results[True], results[False]):
        np.testing.assert_allclose(captured, plain, rtol=1e-6, atol=1e-6)
    for captured, plain in zip(results[True, "decoder"], results[False, "decoder"]):
        np.testing.assert_allclose(captured, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime-cuda", "tensorrt"])
def test_gpu_time_comes_from_cuda_events_and_fits_inside_the_wall_time(exports, backend):  # noqa: F811
    """ONNX Runtime CUDA runs on the runner's stream (user_compute_stream, cuda-python of genrt[gpu])."""
    ready(backend, exports / "ldm")
    manifest = read_manifest(exports / "ldm")
    with Runners(manifest, ["vae_decoder"], backend=backend) as runners:
        decoder = runners["vae_decoder"]
        feeds = decoder_feeds(manifest)
        decoder.infer(feeds)
        wall, gpu = decoder.engine_seconds, decoder.device_seconds
        for _ in range(5):
            decoder.infer(feeds)  # outputs to the host: each call's work is finished when it returns
        wall, gpu = decoder.engine_seconds - wall, decoder.device_seconds - gpu
        assert 0 < gpu <= wall, (gpu, wall)
        if backend == "tensorrt" and decoder.flavour == "tensorrt_rtx":
            assert decoder.cuda_graphs.startswith("by TensorRT-RTX's runtime"), decoder.cuda_graphs
