import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.errors import ConfigError, InputError
from genrt.runtime.pipelines.imagen import ImagenPipeline, upsample_bilinear
from tests.runtime.tiny.common import TorchNoise, pipeline_fixtures, run_in_threads, to_uint8
from tests.runtime.tiny.imagen import build_imagen, imagen_modules, reference_imagen

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]


export_dir, pipe, modules = pipeline_fixtures(build_imagen, imagen_modules)


@pytest.mark.parametrize("size", [(16, 16), (13, 7)])
def test_upsample_matches_torch_bilinear_aligned_corners(size):
    images = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(images), size=size, mode="bilinear",
                                               align_corners=True).numpy()
    got = upsample_bilinear(images, *size)
    assert got.shape == (2, 3, *size) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_load_reads_stages_and_settings(pipe):
    assert isinstance(pipe, ImagenPipeline)
    assert pipe.stages == ("base_unet", "sr_unet_256", "sr_unet_1024")
    assert pipe.resolutions == ((8, 8), (16, 16), (32, 32))
    assert pipe.default_steps == (3, 2, 2) and pipe.default_guidance == (5.0, 3.0, 2.0) and pipe.noise_level == 250


@pytest.mark.parametrize("stages", [1, 3])
def test_cascade_matches_sdk_reference(pipe, modules, stages):
    calls = []
    result = pipe(PROMPTS, stages=stages, generator=TorchNoise(4),
                  callback_on_step_end=lambda pipe, i, t, kwargs: calls.append((i, kwargs["latents"].shape[-1])))
    size = (8, 16, 32)[stages - 1]
    assert result.images.shape == (2, size, size, 3) and result.images.dtype == np.uint8
    # step_index counts within each stage; the latents have the stage's size
    assert calls == [(i, side) for steps, side in list(zip([3, 2, 2], (8, 16, 32)))[:stages] for i in range(steps)]
    if stages == 3:  # what `genrt run`'s progress bar counts
        assert len(calls) == pipe.callback_steps() == 7
    assert {"tokenize", "t5_encoder", "base_unet", "total"} <= set(result.timings)
    tokens = pipe.tokenizer([""] * 2 + PROMPTS)
    expected = to_uint8(reference_imagen(modules, tokens.input_ids, tokens.attention_mask, [3, 2, 2][:stages],
                                         [5.0, 3.0, 2.0][:stages], seed=4))
    difference = np.abs(result.images.astype(int) - expected.astype(int))
    assert difference.max() <= 2, difference.max()
    assert result.images.std() > 5


def test_seeded_calls_are_reproducible_and_thread_safe(pipe):
    serial = [pipe("a cat", seed=seed, stages=2).images for seed in range(4)]
    assert np.abs(serial[0].astype(int) - serial[1].astype(int)).max() > 0
    results = run_in_threads(lambda i: pipe("a cat", seed=i, stages=2).images, 4)
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


def test_diffusers_call_conventions(pipe):
    result = pipe(PROMPTS[0], num_images_per_prompt=2, stages=2, seed=7)  # 2 x 2 rows: the export's largest batch
    assert result.images.shape == (2, 16, 16, 3)
    repeated = pipe([PROMPTS[0]] * 2, stages=2, seed=7)
    np.testing.assert_array_equal(result.images, repeated.images)
    assert np.abs(result.images[0].astype(int) - result.images[1].astype(int)).max() > 0
    # latents: the base stage's initial noise; the rest is drawn from the generator after them, as with the seed
    rng = np.random.Generator(np.random.PCG64(7))
    latents = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    calls = []
    again = pipe(PROMPTS[0], num_images_per_prompt=2, stages=2, latents=latents, generator=rng,
                 num_inference_steps=[3, 2], callback_on_step_end=lambda p, i, t, kwargs: calls.append(i))
    np.testing.assert_array_equal(again.images, pipe(PROMPTS[0], num_images_per_prompt=2, stages=2, seed=7,
                                                      num_inference_steps=[3, 2]).images)
    assert calls == [0, 1, 2, 0, 1]  # num_inference_steps calls per stage


@pytest.mark.parametrize("kwargs, message", [
    (dict(stages=4), "stages is 4; this export has 3"),
    (dict(latents=np.zeros((2, 3, 16, 16), np.float32)), "latents have shape (2, 3, 16, 16) and dtype float32; "
                                                         "expected finite floats of shape (2, 3, 8, 8)"),
    (dict(num_images_per_prompt=1.5), "num_images_per_prompt is 1.5 (float)"),
    (dict(num_inference_steps=[2, 2]), "num_inference_steps has 2 values for 3 stages"),
    (dict(num_inference_steps=0), "num_inference_steps is 0"),
    (dict(noise_level=1000), "noise_level is 1000"),
    (dict(negative_prompt=["a", "b", "c"]), "3 negative prompts for 2 prompts"),
    (dict(prompt=["a cat"] * 3), "received (6, 3, 8, 8) | expected a shape within (1, 3, 8, 8) .. (4, 3, 8, 8)"),
])
def test_bad_arguments(pipe, kwargs, message):
    prompt = kwargs.pop("prompt", PROMPTS)
    with pytest.raises(InputError) as info:
        pipe(prompt, **kwargs)
    assert message in str(info.value) and "fix:" in str(info.value)


def test_sampler_without_thresholding_is_refused_at_load(export_dir):
    with pytest.raises(ConfigError, match="sampler 'euler' does not take option"):
        genrt.runtime.load(export_dir, backend="onnxruntime-cpu", sampler="euler")
