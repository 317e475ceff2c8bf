"""The torch reference pipeline: parity with diffusers' StableDiffusion(Img2Img)Pipeline on random weights
(DDIM, epsilon and v-prediction), the runtime's noise order, and input errors."""

import numpy as np
import pytest
import torch

from genrt.errors import InputError
from genrt.sampling import make_sampler
from genrt.sdk.ldm.checkpoint import from_pretrained
from genrt.sdk.ldm.pipeline import PipelineNoise, StableDiffusionReference, draw_noise, to_uint8
from tests.conftest import relative_error

STEPS = 4


@pytest.fixture(scope="module")
def pipes(diffusers_pipeline):
    import diffusers

    name, folder, _ = diffusers_pipeline
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                               requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    return name, StableDiffusionReference(from_pretrained(folder), "ddim"), theirs


def test_text_to_image_matches_diffusers(pipes):
    name, ours, theirs = pipes
    prompts, negatives = ["a photo of the cat", "hello"], ["blurry", ""]
    noise = draw_noise(7, (2, 4, 8, 8))  # DDIM (eta 0) draws only the initial noise
    result = ours(prompts, negatives, num_inference_steps=STEPS, guidance_scale=7.5, height=16, width=16, noise=noise)
    expected = theirs(prompts, negative_prompt=negatives, num_inference_steps=STEPS, guidance_scale=7.5, height=16,
                      width=16, latents=noise.initial, output_type="latent").images
    assert result.latents.shape == (2, 4, 8, 8) and result.latents.dtype == torch.float32
    assert relative_error(result.latents, expected) < 2e-5  # float32 sampler steps on both sides (SD2: 1.06e-5)
    with torch.no_grad():
        decoded = theirs.vae.decode(result.latents / theirs.vae.config.scaling_factor).sample
    assert relative_error(result.decoded, decoded) < 1e-5
    assert result.images.shape == (2, 16, 16, 3) and result.images.dtype == np.uint8
    assert np.abs(result.images.astype(int) - to_uint8(decoded).astype(int)).max() <= 1
    assert np.array_equal(result.images, to_uint8(result.decoded))


def test_img2img_matches_diffusers(pipes):
    import diffusers

    name, ours, theirs = pipes
    image = np.random.default_rng(0).integers(0, 256, (1, 16, 24, 3), dtype=np.uint8)
    noise = draw_noise(3, (1, 4, 8, 12), img2img=True)  # tiny VAE: factor 2
    result = ours("the cat", num_inference_steps=STEPS, guidance_scale=5.0, image=image, strength=0.75, noise=noise)

    # diffusers takes 4-channel input as ready latents and draws its noise from a torch generator.
    pixels = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        moments = theirs.vae.encode(pixels).latent_dist
    clean = (moments.mean + moments.std * noise.posterior) * theirs.vae.config.scaling_factor
    generator = torch.Generator().manual_seed(11)
    mixed = torch.randn(clean.shape, generator=torch.Generator().manual_seed(11))
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**theirs.components)
    img2img.set_progress_bar_config(disable=True)
    expected = img2img("the cat", image=clean, num_inference_steps=STEPS, guidance_scale=5.0, strength=0.75,
                       generator=generator, output_type="latent").images
    again = ours("the cat", num_inference_steps=STEPS, guidance_scale=5.0, image=image, strength=0.75,
                 noise=PipelineNoise(initial=mixed, posterior=noise.posterior))
    # Several guided steps amplify float32 rounding (thread-count dependent reductions): 1e-5 per network
    # becomes ~1e-5 over the loop, so the whole-pipeline bound is 1e-4.
    assert relative_error(again.latents, expected) < 1e-4
    assert result.images.shape == (1, 16, 24, 3)
    assert not torch.equal(result.latents, again.latents)  # the mixed-in noise matters


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_noise_sources_agree_with_the_sample_loop(pipes, sampler):
    """A torch generator gives what genrt.sdk.diffusion.sample computes; a seed gives the runtime's
    numpy draws; the recorded noise replays the call."""
    from genrt.sdk.diffusion.sample import sample

    name, ours, _ = pipes
    pipe = StableDiffusionReference(ours.model, sampler)
    by_generator = pipe(["cat", "dog"], num_inference_steps=STEPS, guidance_scale=6.0, height=16, width=16,
                        generator=torch.Generator().manual_seed(21))
    model = ours.model
    embeddings = pipe.encode_prompts(["cat", "dog"], ["", ""])
    with torch.no_grad():
        expected = sample(lambda x, t: model.unet(x, t, embeddings),
                          make_sampler(sampler, model.config.schedule_config()), (2, 4, 8, 8), STEPS,
                          torch.Generator().manual_seed(21), guidance_scale=6.0)
    assert torch.equal(by_generator.latents, expected)
    stochastic = sampler == "euler_ancestral"
    assert len(by_generator.noise.steps) == (STEPS if stochastic else 0)

    rng = np.random.Generator(np.random.PCG64(5))
    draws = [rng.standard_normal((1, 4, 8, 8), dtype=np.float32) for _ in range(1 + STEPS)]
    by_seed = pipe("cat", num_inference_steps=STEPS, height=16, width=16, seed=5)
    assert np.array_equal(by_seed.noise.initial.numpy(), draws[0])
    assert all(np.array_equal(n.numpy(), d) for n, d in zip(by_seed.noise.steps, draws[1:]))
    replayed = pipe("cat", num_inference_steps=STEPS, height=16, width=16, noise=by_seed.noise)
    assert torch.equal(replayed.latents, by_seed.latents)
    if stochastic:
        other = PipelineNoise(initial=by_seed.noise.initial, steps=[torch.randn(1, 4, 8, 8) for _ in range(STEPS)])
        assert not torch.equal(pipe("cat", num_inference_steps=STEPS, height=16, width=16, noise=other).latents,
                               by_seed.latents)
    no_guidance = pipe("cat", num_inference_steps=STEPS, guidance_scale=1.0, height=16, width=16, seed=5)
    assert not torch.equal(no_guidance.latents, by_seed.latents)


def test_diffusers_call_conventions(pipes):
    """num_images_per_prompt repeats each prompt's row in place; latents replace the first draw of a seed;
    callback_on_step_end runs once a step."""
    name, ours, _ = pipes
    pipe = StableDiffusionReference(ours.model, "euler_ancestral")  # stochastic: each draw covers all 4 rows
    calls = []
    by_seed = pipe(["cat", "dog"], num_images_per_prompt=2, num_inference_steps=STEPS, height=16, width=16, seed=3,
                   callback_on_step_end=lambda p, i, t, kwargs: calls.append((p is pipe, i, kwargs["latents"].shape)))
    assert by_seed.images.shape == (4, 16, 16, 3)
    assert calls == [(True, i, (4, 4, 8, 8)) for i in range(STEPS)]
    repeated = pipe(["cat", "cat", "dog", "dog"], num_inference_steps=STEPS, height=16, width=16, seed=3)
    assert torch.equal(repeated.latents, by_seed.latents)
    assert not torch.equal(by_seed.latents[0], by_seed.latents[1])
    ddim = StableDiffusionReference(ours.model, "ddim")  # deterministic: the latents are all the noise
    seeded = ddim("cat", num_inference_steps=STEPS, height=16, width=16, seed=8)
    given = ddim("cat", num_inference_steps=STEPS, height=16, width=16, latents=seeded.noise.initial)
    assert torch.equal(given.latents, seeded.latents) and torch.equal(given.noise.initial, seeded.noise.initial)
    with pytest.raises(InputError, match=r"latents have shape \(1, 4, 8, 8\); expected \(4, 4, 8, 8\)"):
        pipe(["cat", "dog"], num_images_per_prompt=2, num_inference_steps=STEPS, height=16, width=16,
             latents=torch.zeros(1, 4, 8, 8))


def test_input_errors(pipes):
    name, ours, _ = pipes
    with pytest.raises(InputError, match="size 30x32 is not a multiple of 4"):
        ours("cat", num_inference_steps=2, height=30, width=32)
    with pytest.raises(InputError, match="2 negative prompts for 1 prompts"):
        ours("cat", ["a", "b"], num_inference_steps=2)
    with pytest.raises(InputError, match="3 noise tensors were left unused"):
        ours("cat", num_inference_steps=2, height=16, width=16, noise=draw_noise(0, (1, 4, 8, 8), 3))
    with pytest.raises(InputError, match="the given noise ran out"):
        StableDiffusionReference(ours.model, "euler_ancestral")("cat", num_inference_steps=2, height=16, width=16,
                                                                noise=draw_noise(0, (1, 4, 8, 8), 1))
    with pytest.raises(InputError, match=r"noise tensor has shape \(1, 4, 8, 8\)"):
        ours("cat", num_inference_steps=2, height=32, width=32, noise=draw_noise(0, (1, 4, 8, 8)))
    with pytest.raises(InputError, match="more than one of seed, generator and noise"):
        ours("cat", num_inference_steps=2, seed=1, noise=draw_noise(0, (1, 4, 8, 8)))
    with pytest.raises(InputError, match="strength"):
        ours("cat", num_inference_steps=2, image=np.zeros((1, 16, 16, 3), np.uint8), strength=0.2)
    with pytest.raises(InputError, match="uint8"):
        ours("cat", num_inference_steps=2, image=np.zeros((1, 16, 16, 3), np.float32))
