"""The torch reference pipeline: parity with diffusers' StableDiffusion(Img2Img)Pipeline on random weights
(DDIM, epsilon and v-prediction), the runtime's noise order, and input errors."""

import numpy as np
import pytest
import torch

from genrt.errors import InputError
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
    # Our DDIM lands on x_0 after the last step (abar = 1), diffusers' with set_alpha_to_one.
    theirs.scheduler = diffusers.DDIMScheduler.from_config(theirs.scheduler.config, set_alpha_to_one=True)
    theirs.set_progress_bar_config(disable=True)
    return name, StableDiffusionReference(from_pretrained(folder), "ddim"), theirs


def test_text_to_image_matches_diffusers(pipes):
    name, ours, theirs = pipes
    prompts, negatives = ["a photo of the cat", "hello"], ["blurry", ""]
    noise = draw_noise(7, (2, 4, 8, 8), STEPS)
    result = ours(prompts, negatives, num_steps=STEPS, guidance_scale=7.5, height=16, width=16, noise=noise)
    expected = theirs(prompts, negative_prompt=negatives, num_inference_steps=STEPS, guidance_scale=7.5, height=16,
                      width=16, latents=noise.initial, output_type="latent").images
    assert result.latents.shape == (2, 4, 8, 8) and result.latents.dtype == torch.float32
    assert relative_error(result.latents, expected) < 1e-5
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
    noise = draw_noise(3, (1, 4, 8, 12), 3, img2img=True)  # tiny VAE: factor 2; strength 0.75 of 4 steps runs 3
    result = ours("the cat", num_steps=STEPS, guidance_scale=5.0, image=image, strength=0.75, noise=noise)

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
    again = ours("the cat", num_steps=STEPS, guidance_scale=5.0, image=image, strength=0.75,
                 noise=PipelineNoise(initial=mixed, steps=noise.steps, posterior=noise.posterior))
    assert relative_error(again.latents, expected) < 1e-5
    assert result.images.shape == (1, 16, 24, 3)
    assert not torch.equal(result.latents, again.latents)  # the mixed-in noise matters


def test_seed_draws_the_runtime_noise_and_stochastic_samplers_use_it(pipes):
    name, ours, _ = pipes
    rng = np.random.Generator(np.random.PCG64(5))
    expected = [rng.standard_normal((1, 4, 8, 8), dtype=np.float32) for _ in range(1 + STEPS)]
    noise = draw_noise(5, (1, 4, 8, 8), STEPS)
    assert np.array_equal(noise.initial.numpy(), expected[0])
    assert all(np.array_equal(n.numpy(), e) for n, e in zip(noise.steps, expected[1:]))

    ancestral = StableDiffusionReference(ours.model, "euler_ancestral")
    by_seed = ancestral("cat", num_steps=STEPS, height=16, width=16, seed=5)
    by_noise = ancestral("cat", num_steps=STEPS, height=16, width=16, noise=noise)
    assert torch.equal(by_seed.latents, by_noise.latents)
    other_steps = PipelineNoise(initial=noise.initial, steps=[torch.randn(1, 4, 8, 8) for _ in range(STEPS)])
    assert not torch.equal(ancestral("cat", num_steps=STEPS, height=16, width=16, noise=other_steps).latents,
                           by_noise.latents)
    no_guidance = ours("cat", num_steps=STEPS, guidance_scale=1.0, height=16, width=16, seed=5)
    assert not torch.equal(no_guidance.latents, ours("cat", num_steps=STEPS, height=16, width=16, seed=5).latents)


def test_input_errors(pipes):
    name, ours, _ = pipes
    with pytest.raises(InputError, match="size 30x32 is not a multiple of 4"):
        ours("cat", num_steps=2, height=30, width=32)
    with pytest.raises(InputError, match="2 negative prompts for 1 prompts"):
        ours("cat", ["a", "b"], num_steps=2)
    with pytest.raises(InputError, match="pass 2 step tensors of shape"):
        ours("cat", num_steps=2, height=16, width=16, noise=draw_noise(0, (1, 4, 8, 8), 3))
    with pytest.raises(InputError, match="strength"):
        ours("cat", num_steps=2, image=np.zeros((1, 16, 16, 3), np.uint8), strength=0.2)
    with pytest.raises(InputError, match="uint8"):
        ours("cat", num_steps=2, image=np.zeros((1, 16, 16, 3), np.float32))
