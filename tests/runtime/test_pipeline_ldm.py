import numpy as np
import pytest

import genrt.runtime
from genrt.errors import InputError
from genrt.runtime.pipelines.ldm import LatentDiffusionPipeline
from tests.runtime.tiny.common import TorchNoise, pipeline_fixtures, run_in_threads, to_uint8
from tests.runtime.tiny.ldm import ToySampler, build_ldm, ldm_modules, reference_ldm

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]


export_dir, pipe, modules = pipeline_fixtures(build_ldm, ldm_modules, sampler=ToySampler)


def test_load_returns_ldm_pipeline_with_manifest_defaults(pipe):
    assert isinstance(pipe, LatentDiffusionPipeline)
    assert pipe.backend == "onnxruntime-cpu"
    assert pipe.default_size == (64, 64) and pipe.default_steps == 4 and pipe.default_guidance == 5.0
    assert pipe.scaling_factor == pytest.approx(0.18215)


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_text2img_matches_torch_reference(pipe, modules, guidance):
    steps = []
    result = pipe(PROMPTS, negative_prompt="blurry", guidance_scale=guidance, num_inference_steps=3, height=48,
                  width=64, generator=TorchNoise(7),
                  callback_on_step_end=lambda p, i, t, kwargs: steps.append((p is pipe, i, kwargs["latents"].shape)))
    assert result.images.shape == (2, 48, 64, 3) and result.images.dtype == np.uint8
    assert steps == [(True, i, (2, 4, 6, 8)) for i in range(3)]
    assert {"tokenize", "text_encoder", "denoise", "vae_decoder", "total"} <= set(result.timings)
    assert all(seconds >= 0 for seconds in result.timings.values())
    texts = ["blurry"] * 2 + PROMPTS if guidance != 1.0 else PROMPTS
    tokens = pipe.tokenizer(texts).input_ids
    expected = to_uint8(reference_ldm(modules, tokens, guidance, (2, 4, 6, 8), 3, seed=7))
    difference = np.abs(result.images.astype(int) - expected.astype(int))
    assert difference.max() <= 2, difference.max()
    assert result.images.std() > 5  # a real picture, not a constant


def test_img2img_matches_torch_reference(pipe, modules):
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 32, 3), dtype=np.uint8)
    result = pipe(PROMPTS[:1], image=image, strength=0.5, num_inference_steps=4, generator=TorchNoise(3))
    assert result.images.shape == (1, 64, 32, 3) and "vae_encoder" in result.timings
    tokens = pipe.tokenizer(["", PROMPTS[0]]).input_ids
    expected = to_uint8(reference_ldm(modules, tokens, 5.0, (1, 4, 8, 4), 4, seed=3, image=image, strength=0.5))
    assert np.abs(result.images.astype(int) - expected.astype(int)).max() <= 2


def test_seed_is_reproducible_and_pil_helper(pipe):
    first = pipe("a cat", seed=11, num_inference_steps=2)
    again = pipe("a cat", seed=11, num_inference_steps=2)
    other = pipe("a cat", seed=12, num_inference_steps=2)
    np.testing.assert_array_equal(first.images, again.images)
    assert np.abs(first.images.astype(int) - other.images.astype(int)).max() > 0
    assert first.seed == 11
    pil = first.to_pil()
    assert len(pil) == 1 and pil[0].size == (64, 64) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), first.images[0])


def test_concurrent_calls_equal_serial_calls(pipe):
    seeds = list(range(6))
    serial = [pipe("a cat", seed=seed, num_inference_steps=2).images for seed in seeds]
    results = run_in_threads(lambda i: pipe("a cat", seed=seeds[i], num_inference_steps=2).images, len(seeds))
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


def test_num_images_per_prompt_repeats_each_prompt_with_its_own_noise(pipe):
    result = pipe(PROMPTS, num_images_per_prompt=2, num_inference_steps=2, seed=3)
    assert result.images.shape == (4, 64, 64, 3)
    # diffusers' order: each prompt's row repeated in place, one noise draw for the whole batch
    repeated = pipe([PROMPTS[0]] * 2 + [PROMPTS[1]] * 2, num_inference_steps=2, seed=3)
    np.testing.assert_array_equal(result.images, repeated.images)
    assert np.abs(result.images[0].astype(int) - result.images[1].astype(int)).max() > 0
    image = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    assert pipe("a cat", image=image, num_images_per_prompt=3, num_inference_steps=2,
                seed=0).images.shape == (3, 64, 64, 3)


def test_latents_give_the_image_of_the_seed_that_drew_them(pipe):
    expected = pipe(PROMPTS, num_inference_steps=3, seed=11).images
    rng = np.random.Generator(np.random.PCG64(11))
    latents = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)  # the first draw of seed 11
    # the stochastic toy sampler's step noise comes from the same generator, after the latents
    result = pipe(PROMPTS, num_inference_steps=3, latents=latents, generator=rng)
    np.testing.assert_array_equal(result.images, expected)


def test_callback_on_step_end_is_called_once_per_step(pipe):
    calls = []

    def callback(p, step_index, timestep, kwargs):
        calls.append((p, step_index, timestep, kwargs["latents"].shape, kwargs["latents"].dtype))
        return kwargs

    pipe("a cat", num_inference_steps=5, seed=0, callback_on_step_end=callback)
    assert [call[1] for call in calls] == list(range(5)) and all(call[0] is pipe for call in calls)
    assert [call[2] for call in calls] == [900, 675, 450, 225, 0]  # the toy sampler's timesteps
    assert all(call[3:] == ((1, 4, 8, 8), np.float32) for call in calls)
    assert pipe.callback_steps(5) == len(calls)  # what `genrt run`'s progress bar counts
    calls.clear()
    pipe("a cat", seed=0, callback_on_step_end=callback)
    assert len(calls) == pipe.callback_steps() == 4  # the manifest's num_steps


@pytest.mark.parametrize("kwargs, message", [
    (dict(latents=np.zeros((2, 4, 8, 4), np.float32)), "latents have shape (2, 4, 8, 4) and dtype float32; "
                                                       "expected finite floats of shape (2, 4, 8, 8)"),
    (dict(latents=np.zeros((1, 4, 8, 8), np.float32), num_images_per_prompt=2), "expected finite floats of shape "
                                                                              "(4, 4, 8, 8)"),
    (dict(latents=np.zeros((2, 4, 8, 8), np.int64)), "latents have shape (2, 4, 8, 8) and dtype int64"),
    (dict(latents=np.zeros((2, 4, 8, 8), np.float32), image=np.zeros((2, 64, 64, 3), np.uint8), strength=1.0),
     "latents were given for img2img"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt is 0"),
    (dict(callback_on_step_end=3), "callback_on_step_end is 3; expected a callable"),
])
def test_bad_diffusers_arguments_raise_input_errors(pipe, kwargs, message):
    with pytest.raises(InputError) as info:
        pipe(PROMPTS, num_inference_steps=1, height=64, width=64, **kwargs)
    assert message in str(info.value) and "fix:" in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(negative_prompt=["a", "b", "c"]), "3 negative prompts for 2 prompts"),
    (dict(height=60, width=64), "height is 60; expected a multiple of 8"),
    (dict(height=256, width=64), "height is 256; expected a multiple of 8 in [32, 128]"),
    (dict(num_inference_steps=0), "num_inference_steps is 0"),
    (dict(image=np.zeros((2, 64, 64, 3), np.uint8), strength=1.5), "strength is 1.5"),
    (dict(image=np.zeros((2, 64, 64), np.uint8), num_inference_steps=4), "image has dtype uint8 and shape (2, 64, 64)"),
    (dict(seed=1, generator=TorchNoise(1)), "both seed and generator were given"),
])
def test_bad_arguments_raise_input_errors(pipe, kwargs, message):
    with pytest.raises(InputError) as info:
        pipe(PROMPTS, num_inference_steps=kwargs.pop("num_inference_steps", 1), **kwargs)
    assert message in str(info.value) and "fix:" in str(info.value)


def test_empty_prompt_list_is_refused(pipe):
    with pytest.raises(InputError, match="prompt must be a string or a non-empty list of strings"):
        pipe([])


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral", "dpmpp_2m"])
def test_numpy_samplers_match_sdk_sampling_loop(export_dir, modules, sampler):
    """The runtime with genrt.sampling on numpy arrays vs genrt.sdk.diffusion.sample on the same torch modules."""
    import torch

    from genrt.sampling import ScheduleConfig, make_sampler
    from genrt.sdk.diffusion.sample import sample
    from tests.runtime.tiny.ldm import SCHEDULER

    with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", sampler=sampler, threads=1) as runtime_pipe:
        result = runtime_pipe(PROMPTS, guidance_scale=4.0, num_inference_steps=5, generator=TorchNoise(9))
        tokens = runtime_pipe.tokenizer([""] * 2 + PROMPTS).input_ids
    with torch.no_grad():
        embeddings = modules["text_encoder"](torch.from_numpy(tokens))
        latents = sample(lambda x, t: modules["unet"](x, t, embeddings),
                         make_sampler(sampler, ScheduleConfig(**SCHEDULER)), (2, 4, 8, 8), 5,
                         torch.Generator().manual_seed(9), guidance_scale=4.0)
        expected = to_uint8(modules["vae_decoder"](latents / 0.18215).numpy())
    assert np.abs(result.images.astype(int) - expected.astype(int)).max() <= 2
    assert result.images.std() > 5


def test_img2img_with_numpy_sampler_starts_part_way(export_dir):
    image = np.full((1, 64, 64, 3), 128, np.uint8)
    with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", sampler="euler", threads=1) as runtime_pipe:
        calls = []
        result = runtime_pipe("a cat", image=image, strength=0.5, num_inference_steps=6, seed=0,
                              callback_on_step_end=lambda pipe, i, t, kwargs: calls.append(i))
        assert result.images.shape == (1, 64, 64, 3) and calls == [0, 1, 2]
        with pytest.raises(InputError, match="strength 0.1 keeps no step of 6"):
            runtime_pipe("a cat", image=image, strength=0.1, num_inference_steps=6)


def test_unknown_sampler_fails_at_load(export_dir):
    from genrt.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown sampler 'heun'"):
        genrt.runtime.load(export_dir, backend="onnxruntime-cpu", sampler="heun")
