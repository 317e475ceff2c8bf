"""The device-resident VQGAN sampling loop (genrt.runtime.loops.kv_cache) on ONNX Runtime CPU: the prior's
key/value cache stays a device tensor from one code to the next (each call is fed the previous call's ``present_key_values`` value),
the prior never runs on host arrays, and a tiny exported vqgan folder gives the host loop's codes and images
for the same seed, temperature, top-k and top-p."""

import time

import numpy as np
import pytest

import genrt.runtime
from genrt.errors import GenrtError
from genrt.export.folder import export_folder
from genrt.export.options import ExportOptions
from genrt.export.vqgan import plan as vqgan_plan
from genrt.runtime.backends.onnxruntime import OrtTensor

LABELS = [3, 7]
GRID = (6, 8)  # 48 codes after the 1 condition token; the tiny prior caches at most 64 tokens


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident_vqgan")
    export_folder(vqgan_plan("tiny", "fp32", ExportOptions(random_weights=True, seed=0)), root / "export")
    return root / "export"


def sample(folder, resident, monkeypatch, **call):
    """(images, the codes fed to the decoder, the prior's device calls as (feeds, outputs), host bytes moved
    per code by the prior calls, seconds in the sampling loop)."""
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1, resident=resident) as pipe:
        assert pipe.resident == resident
        decoder, prior = pipe.runners["decoder"], pipe.runners["prior"]
        seen = {"codes": [], "device_calls": [], "host_bytes": 0}
        host_decode, prior_infer = decoder.infer, prior.infer

        def record_decoder(feeds, to_host=True):
            seen["codes"].append(feeds["indices"].copy())
            return host_decode(feeds, to_host)

        def record_prior(feeds, to_host=True):
            outputs = prior_infer(feeds, to_host)
            if any(isinstance(value, OrtTensor) for value in [*feeds.values(), *outputs.values()]):
                seen["device_calls"].append((dict(feeds), outputs))
            # what crosses between host and device: every host array fed or returned
            seen["host_bytes"] += sum(value.nbytes for value in [*feeds.values(), *outputs.values()]
                                      if isinstance(value, np.ndarray))
            return outputs

        monkeypatch.setattr(decoder, "infer", record_decoder)
        monkeypatch.setattr(prior, "infer", record_prior)
        start = time.perf_counter()
        result = pipe(LABELS, grid=GRID, **call)
        seconds = time.perf_counter() - start
    count = GRID[0] * GRID[1]
    return result.images, seen["codes"][0], seen["device_calls"], seen["host_bytes"] / count, seconds


@pytest.mark.parametrize("call", [
    dict(seed=11),
    dict(seed=4, temperature=0.7, top_k=6, top_p=0.9),
    dict(seed=9, temperature=1.6, top_p=0.8),
    dict(top_k=1),
])
def test_resident_sampling_matches_host_loop(export_dir, monkeypatch, call):
    host_images, host_codes, host_device_calls, host_bytes, host_seconds = sample(export_dir, False, monkeypatch,
                                                                                  **call)
    images, codes, device_calls, device_bytes, seconds = sample(export_dir, True, monkeypatch, **call)
    print(f"{call}: bytes host<->device per code {host_bytes:.0f} (host loop) vs {device_bytes:.0f} (resident); "
          f"{host_seconds * 1e3:.1f} ms vs {seconds * 1e3:.1f} ms")
    assert host_device_calls == []
    assert codes.shape == host_codes.shape == (2, *GRID) and codes.dtype == np.int32
    np.testing.assert_array_equal(codes, host_codes)
    np.testing.assert_array_equal(images, host_images)
    assert images.shape == (2, 12, 16, 3) and images.dtype == np.uint8
    assert len(np.unique(codes)) > 1 and host_images.std() > 1
    # one device call per code; each is fed the cache value the previous call returned, never a host copy
    assert len(device_calls) == GRID[0] * GRID[1]
    layers, _, batch, heads, _, head_dim = device_calls[0][0]["past_key_values"].shape
    for step, (feeds, outputs) in enumerate(device_calls):
        # the cache in and out on the device; ids, position and logits on the host
        assert all(isinstance(value, OrtTensor) and value.device == "cpu"
                   for value in (feeds["past_key_values"], outputs["present_key_values"]))
        assert all(isinstance(value, np.ndarray) for value in (feeds["input_ids"], feeds["position"], outputs["logits"]))
        if step:
            assert feeds["past_key_values"] is device_calls[step - 1][1]["present_key_values"]
        assert feeds["past_key_values"].shape == (layers, 2, batch, heads, step, head_dim)
        assert outputs["present_key_values"].shape == (layers, 2, batch, heads, step + 1, head_dim)
        assert feeds["position"].tolist() == [step]
    np.testing.assert_array_equal(np.stack([feeds["input_ids"][:, 0] for feeds, _ in device_calls[1:]], 1),
                                  codes.reshape(2, -1)[:, :-1])
    assert device_bytes * 20 < host_bytes


def test_resident_option_defaults_and_refusals(export_dir):
    with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", threads=1) as pipe:
        assert pipe.resident is False  # the default is resident only on onnxruntime-cuda
    with pytest.raises(GenrtError) as info:  # the loop takes any runner; TensorRT itself needs a GPU
        genrt.runtime.load(export_dir, backend="tensorrt", resident=True)
    assert "backend 'tensorrt' needs a CUDA GPU" in str(info.value)
    assert "fix:" in str(info.value)
