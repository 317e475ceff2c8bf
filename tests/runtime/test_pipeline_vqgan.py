import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.errors import InputError
from genrt.runtime.pipelines.common import RunnerOptions
from genrt.runtime.pipelines.vqgan import VQGANPipeline
from genrt.runtime.sampling_filters import draw_codes, filter_logits, softmax
from genrt.sdk.vqgan.prior import filter_logits as torch_filter_logits
from tests.runtime.tiny.common import TorchNoise, pipeline_fixtures, run_in_threads, to_uint8
from tests.runtime.tiny.vqgan import build_vqgan, reference_prior_codes, vqgan_modules


export_dir, pipe, modules = pipeline_fixtures(build_vqgan, vqgan_modules)


@pytest.mark.parametrize("top_k, top_p", [(None, None), (5, None), (None, 0.7), (3, 0.9), (1, None)])
def test_filter_logits_matches_sdk(top_k, top_p):
    logits = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32) * 3
    ours = filter_logits(logits, top_k, top_p)
    expected = torch_filter_logits(torch.from_numpy(logits).double(), top_k, top_p).numpy()
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
    np.testing.assert_allclose(ours[~np.isinf(ours)], expected[~np.isinf(expected)], rtol=1e-12)


def test_draw_codes_follows_the_distribution():
    probs = np.array([[0.1, 0.0, 0.6, 0.3]])
    rng = np.random.default_rng(0)
    draws = np.concatenate([draw_codes(probs, rng) for _ in range(4000)])
    assert draws.dtype == np.int32 and 1 not in draws
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, probs[0], atol=0.03)
    assert softmax(np.array([[0.0, -np.inf]])).tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("top_k", [None, 4, 1])
def test_sampling_matches_uncached_torch_prior(pipe, modules, top_k):
    labels = np.array([3, 7])
    steps = []
    result = pipe(labels, grid=(3, 4), top_k=top_k, temperature=0.8, generator=TorchNoise(5),
                  callback_on_step_end=lambda pipe, i, t, kwargs: steps.append((i, t, kwargs["codes"].shape)))
    assert result.images.shape == (2, 12, 16, 3) and result.images.dtype == np.uint8
    assert steps == [(i, i, (2, i + 1)) for i in range(12)] and {"prior", "decoder", "total"} <= set(result.timings)
    codes = reference_prior_codes(modules["prior"], labels[:, None].astype(np.int32), 12, seed=5,
                                  temperature=0.8, top_k=top_k)
    with torch.no_grad():
        expected = to_uint8(modules["decoder"](torch.from_numpy(codes.reshape(2, 3, 4))).numpy())
    np.testing.assert_array_equal(result.images, expected)
    assert len(np.unique(codes)) > 1


def test_encode_decode_match_torch(pipe, modules):
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 8, 3), dtype=np.uint8)
    indices = pipe.encode(images)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = modules["encoder"](pixels).numpy()
        decoded = to_uint8(modules["decoder"](torch.from_numpy(expected)).numpy())
    assert indices.shape == (2, 4, 2) and indices.dtype == np.int32
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(pipe.reconstruct(images).images, decoded)
    np.testing.assert_array_equal(pipe.encode(images[0]), expected[:1])  # (H, W, 3) is one image


def test_default_condition_seed_and_threads(pipe):
    serial = [pipe(seed=seed, batch_size=1).images for seed in range(4)]
    assert serial[0].shape == (1, 16, 16, 3)  # default grid: the decoder profile's opt (4, 4)
    steps = []
    first = pipe(seed=0, callback_on_step_end=lambda pipe, i, t, kwargs: steps.append(i))
    np.testing.assert_array_equal(first.images, serial[0])
    assert len(steps) == pipe.callback_steps() == 16  # one code per step (what `genrt run`'s progress bar counts)
    results = run_in_threads(lambda i: pipe(seed=i).images, 4)
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(condition=[10]), "condition ids span [10, 10]"),
    (dict(condition=np.zeros((1, 2), np.int64)), "condition has shape (1, 2)"),
    (dict(condition=[0.5]), "dtype float64"),
    (dict(temperature=0.0), "temperature is 0.0"),
    (dict(top_k=17), "top_k is 17"),
    (dict(top_p=1.5), "top_p is 1.5"),
    (dict(grid=(8, 8)), "a 8x8 grid needs 64 codes after 1 condition tokens"),
    (dict(grid=(0, 4)), "grid is (0, 4)"),
    (dict(grid=(1, 4)), "grid 1x4 is outside the decoder's range 2x2 .. 8x8"),
])
def test_bad_sampling_arguments(pipe, kwargs, message):
    with pytest.raises(InputError) as info:
        pipe(**kwargs)
    assert message in str(info.value) and "fix:" in str(info.value)


def test_bad_codes_and_images(pipe):
    with pytest.raises(InputError, match=r"indices have shape \(4, 4\)"):
        pipe.decode(np.zeros((4, 4), np.int32))
    with pytest.raises(InputError, match=r"expected a shape within \(1, 3, 8, 8\) .. \(4, 3, 32, 32\)"):
        pipe.encode(np.zeros((1, 64, 64, 3), np.uint8))


def test_export_without_prior_cannot_sample(export_dir, tmp_path):
    import dataclasses
    import shutil

    from genrt.manifest import write_manifest

    manifest = genrt.runtime.read_manifest(export_dir)
    for name in ("encoder", "decoder"):
        shutil.copytree(export_dir / name, tmp_path / name)
    kept = {name: dataclasses.replace(manifest.components[name], onnx=tmp_path / name / "model.onnx")
            for name in ("encoder", "decoder")}
    write_manifest(dataclasses.replace(manifest, root=tmp_path, components=kept))
    with VQGANPipeline(genrt.runtime.read_manifest(tmp_path), RunnerOptions(backend="onnxruntime-cpu")) as pipe:
        assert pipe.decode(np.zeros((1, 2, 2), np.int32)).images.shape == (1, 8, 8, 3)
        with pytest.raises(InputError, match="has no prior, so it cannot sample"):
            pipe(seed=0)
