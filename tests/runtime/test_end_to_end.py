"""End-to-end parity: `genrt.export` writes a folder from the tiny genrt.sdk models (random weights),
the torch-free runtime runs it on ONNX Runtime CPU, and the genrt.sdk networks in torch with the same
weights, seed and noise must give the same images (fp32: at most 2/255 per pixel)."""

import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.export.folder import export_folder
from genrt.export.options import ExportOptions
from tests.runtime.tiny_exports import write_tokenizer
from tests.runtime.tiny_pipelines import TorchNoise, to_uint8

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]


def export(family: str, root, **options):
    import importlib

    plan = importlib.import_module(f"genrt.export.{family}").plan("tiny", "fp32", ExportOptions(
        random_weights=True, seed=0, **options))
    export_folder(plan, root / "export", "fp32")
    return plan, root / "export"


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_ldm")
    return export("ldm", root, tokenizer=write_tokenizer(root / "tokenizer", "clip"))


@pytest.fixture(scope="module")
def vqgan(tmp_path_factory):
    return export("vqgan", tmp_path_factory.mktemp("e2e_vqgan"))


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_ldm_runtime_matches_sdk(ldm, sampler):
    from genrt.sdk.diffusion import ScheduleConfig, make_sampler, sample

    plan, folder = ldm
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS, guidance_scale=6.0, num_steps=4, generator=TorchNoise(21))
        tokens = pipe.tokenizer([""] * 2 + PROMPTS).input_ids
        scaling = pipe.scaling_factor
        latent_size = pipe.default_size[0] // pipe.vae_factor
    text_encoder, unet, decoder = (plan.components[name].module() for name in ("text_encoder", "unet", "vae_decoder"))
    with torch.no_grad():
        embeddings = text_encoder(torch.from_numpy(tokens))
        latents = sample(lambda x, t: unet(x, t, embeddings),
                         make_sampler(sampler, ScheduleConfig(**plan.pipeline["scheduler"])),
                         (2, 4, latent_size, latent_size), 4, torch.Generator().manual_seed(21), guidance_scale=6.0)
        expected = to_uint8(decoder(latents / scaling).numpy())
    assert result.images.shape == expected.shape == (2, 32, 32, 3)  # the tiny config's image_size, VAE factor 2
    difference = np.abs(result.images.astype(int) - expected.astype(int))
    assert difference.max() <= 2, difference.max()
    assert result.images.std() > 1


def test_vqgan_runtime_matches_sdk(vqgan):
    plan, folder = vqgan
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1) as pipe:
        indices = pipe.encode(images)
        reconstruction = pipe.decode(indices).images
        sampled = pipe([1, 4], grid=(4, 4), top_k=1)
    encoder, decoder = plan.components["encoder"].module(), plan.components["decoder"].module()
    prior = plan.components["prior"].module().prior
    with torch.no_grad():
        expected_indices = encoder(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
        expected_reconstruction = to_uint8(decoder(torch.from_numpy(expected_indices)).numpy())
        codes = prior.sample(torch.tensor([[1], [4]]), 16, top_k=1).reshape(2, 4, 4).to(torch.int32)
        expected_sample = to_uint8(decoder(codes).numpy())
    np.testing.assert_array_equal(indices, expected_indices)
    assert np.abs(reconstruction.astype(int) - expected_reconstruction.astype(int)).max() <= 2
    assert np.abs(sampled.images.astype(int) - expected_sample.astype(int)).max() <= 2
