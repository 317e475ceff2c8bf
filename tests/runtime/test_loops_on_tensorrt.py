"""The device-resident loops take any runner: on the TensorRT runner, with the CUDA runtime faked and each engine's
plan an ONNX graph that ONNX Runtime CPU runs over the fake device memory (tests/runtime/fake_gpu.py), the tiny ldm
and vqgan pipelines pass latents, noise predictions and the prior's key/value cache between calls as CudaTensors (the
prior's first call binds a zero-byte cache) and give exactly the images of the same loops on ONNX Runtime CPU. Real
TensorRT on a GPU: tests/gpu/test_gpu_runners.py."""

import dataclasses

import numpy as np
import pytest

import genrt.runtime
import genrt.runtime.backends.tensorrt as trt_backend
import genrt.runtime.backends.trt_logger as trt_logger
from genrt.manifest import EngineRecord, read_manifest, replace_component, sha256_of, write_manifest
from genrt.runtime.backends.tensorrt import CudaTensor, TensorRTRunner
from tests.runtime.fake_gpu import FakeCudart, OnnxPlanTensorRT
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan


@pytest.fixture
def calls(monkeypatch):
    """The fake GPU installed; returns the TensorRT runners' calls: (component, {feed: (on the device?, shape)},
    outputs to the host)."""
    cudart = FakeCudart()
    trt = OnnxPlanTensorRT(cudart)
    real_require, real_infer = trt_backend.require, TensorRTRunner._infer_impl
    monkeypatch.setattr(trt_backend, "cuda_runtime", lambda: cudart)
    monkeypatch.setattr(trt_backend, "require", lambda module, extra: trt if module in ("tensorrt", "tensorrt_rtx")
                        else real_require(module, extra))
    monkeypatch.setattr(trt_backend, "build_engine", lambda spec, model, flavour, capability: model)  # step graphs
    monkeypatch.setattr(trt_logger, "_LOGGERS", {})
    recorded = []

    def infer(runner, feeds, host):
        recorded.append((runner.spec.name, {k: (isinstance(v, CudaTensor), v.shape) for k, v in feeds.items()}, host))
        return real_infer(runner, feeds, host)

    monkeypatch.setattr(TensorRTRunner, "_infer_impl", infer)
    return recorded


def with_engines(folder):
    """``folder`` with one 'engine' per component: its ONNX graph, recorded as a TensorRT engine for the fake GPU."""
    manifest = read_manifest(folder)
    for entry in manifest.components.values():
        plan = entry.onnx.parent / "engine-fake.plan"
        plan.write_bytes(entry.onnx.read_bytes())
        record = EngineRecord(path=plan, key="fake", flavour="tensorrt", trt_version=OnnxPlanTensorRT.__version__,
                              compute_capabilities=("8.9",), static=False, sha256=sha256_of(plan))
        manifest = replace_component(manifest, dataclasses.replace(entry, engines=(record,)))
    write_manifest(manifest)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {"ldm": with_engines(build_ldm(tmp_path_factory.mktemp("ldm"))),
            "vqgan": with_engines(build_vqgan(tmp_path_factory.mktemp("vqgan")))}


def test_the_guided_loop_runs_on_tensorrt_runners_with_device_tensors(folders, calls):
    call = dict(num_inference_steps=3, guidance_scale=5.0, seed=7)
    prompts = ["a red cube on a blue sphere", "an oil painting of a cat"]
    with genrt.runtime.load(folders["ldm"], backend="tensorrt", sampler="euler_ancestral") as pipe:
        assert pipe.backend == "tensorrt" and pipe.resident is True
        images = pipe(prompts, **call).images
    with genrt.runtime.load(folders["ldm"], backend="onnxruntime-cpu", sampler="euler_ancestral", resident=True) as cpu:
        expected = cpu(prompts, **call).images
    assert images.shape == (2, 64, 64, 3) and images.std() > 0
    np.testing.assert_array_equal(images, expected)
    unet = [(feeds, host) for name, feeds, host in calls if name == "unet"]
    steps = [(feeds, host) for name, feeds, host in calls if name.endswith("step")]
    assert len(unet) == len(steps) == 3
    assert all(feeds["encoder_hidden_states"][0] and feeds["sample"][0] and not host for feeds, host in unet)
    assert all(feeds["model_output"][0] and not host for feeds, host in steps)  # the U-Net's output, never on the host
    assert [name for name, _, _ in calls][-1] == "vae_decoder"


def test_the_vqgan_prior_cache_stays_on_tensorrt_and_starts_empty(folders, calls):
    call = dict(grid=(4, 4), seed=4, temperature=0.7, top_k=6)
    with genrt.runtime.load(folders["vqgan"], backend="tensorrt") as pipe:
        assert pipe.resident is True
        images = pipe([3, 7], **call).images
    with genrt.runtime.load(folders["vqgan"], backend="onnxruntime-cpu", resident=True) as cpu:
        expected = cpu([3, 7], **call).images
    np.testing.assert_array_equal(images, expected)
    prior = [(feeds, host) for name, feeds, host in calls if name == "prior"]
    assert len(prior) == 16 and all(feeds["past_key_values"][0] and host == {"logits"} for feeds, host in prior)
    assert [feeds["past_key_values"][1][4] for feeds, _ in prior[:3]] == [0, 1, 2]  # P: empty, then one token more
