"""End-to-end parity: `genrt.export` writes a folder from the tiny genrt.sdk models (random weights),
the torch-free runtime runs it on ONNX Runtime CPU, and the genrt.sdk networks in torch with the same
weights, seed and noise must give the same images (fp32: at most 2/255 per pixel). The torch side takes
its networks from the exported plan (the same cached random weights)."""

import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.export.folder import export_folder
from genrt.export.options import ExportOptions
from genrt.sdk.imagen.config import cascade_config
from tests.runtime.tiny.common import TorchNoise, to_uint8
from tests.runtime.tiny.exports import write_tokenizer

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]
IMAGEN_PROMPT = ["a red cube"]  # fits the tiny T5's 16 tokens with the character-level stand-in tokenizer


def export(family: str, root, **options):
    import importlib

    plan = importlib.import_module(f"genrt.export.{family}").plan("tiny", "fp32", ExportOptions(
        random_weights=True, seed=0, **options))
    export_folder(plan, root / "export")
    return plan, root / "export"


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_ldm")
    return export("ldm", root, tokenizer=write_tokenizer(root / "tokenizer", "clip"))


@pytest.fixture(scope="module")
def imagen(tmp_path_factory):
    # random weights: export writes its stand-in T5 tokenizer (pad 0, </s> 1) into DIR/tokenizer
    return export("imagen", tmp_path_factory.mktemp("e2e_imagen"))


@pytest.fixture(scope="module")
def vqgan(tmp_path_factory):
    return export("vqgan", tmp_path_factory.mktemp("e2e_vqgan"))


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_ldm_runtime_matches_sdk(ldm, sampler):
    """genrt.sdk.ldm's StableDiffusionReference on the plan's networks, the exported tokenizer.json and the
    same torch-drawn noise (initial latents, then one tensor per step for euler_ancestral)."""
    from transformers import PreTrainedTokenizerFast

    from genrt.sdk.ldm.config import get_config
    from genrt.sdk.ldm.model import LatentDiffusion
    from genrt.sdk.ldm.pipeline import StableDiffusionReference
    from genrt.sdk.ldm.text_encoder import tokenize

    plan, folder = ldm
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS, guidance_scale=6.0, num_inference_steps=4, generator=TorchNoise(21))
        tokens = pipe.tokenizer([""] * 2 + PROMPTS).input_ids
        pad_id = pipe.tokenizer.pad_id
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer" / "tokenizer.json"))
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)  # the runtime's padding token
    unet, vae, text_encoder = (plan.components[name].module() for name in ("unet", "vae_decoder", "text_encoder"))
    model = LatentDiffusion(get_config(plan.config), tokenizer, unet=unet.unet, vae=vae.vae,
                            text_encoder=text_encoder.text_encoder)
    reference = StableDiffusionReference(model, sampler)
    # the reference tokenizes [negatives; prompts] as the runtime does
    np.testing.assert_array_equal(tokens, tokenize(tokenizer, [""] * 2 + PROMPTS, tokens.shape[1]).numpy())
    expected = reference(PROMPTS, num_inference_steps=4, guidance_scale=6.0,
                         generator=torch.Generator().manual_seed(21)).images
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


class ReplayNoise:
    """A runtime noise source that hands out tensors drawn beforehand, checking each requested shape."""

    def __init__(self, draws: list[torch.Tensor]):
        self.draws = list(draws)

    def standard_normal(self, size, dtype=np.float32):
        assert self.draws, f"the runtime drew more noise than the sdk cascade: one more of {size}"
        draw = self.draws.pop(0)
        assert tuple(draw.shape) == tuple(size), (tuple(draw.shape), size)
        return draw.numpy().astype(dtype)


def runtime_order(noise) -> list[torch.Tensor]:
    """The sdk cascade's per-stage noise in the order the runtime draws it: (SR stages) augmentation,
    then the initial x_T, then one tensor per step (see runtime/pipelines/imagen.py)."""
    draws = []
    for stage in noise:
        draws += ([] if stage.augmentation is None else [stage.augmentation]) + [stage.initial] + list(stage.steps)
    return draws


def test_imagen_cascade_runtime_matches_sdk(imagen):
    """The whole tiny cascade, 64 -> 256 -> 1024, one DDPM step per stage (two at the base), batch 1,
    against genrt.sdk.imagen.cascade.Cascade fed the same noise and the runtime's empty-prompt embeddings."""
    from genrt.sdk.imagen.cascade import Cascade, draw_noise

    plan, folder = imagen
    steps = [2, 1, 1]
    t5, base, sr_256, sr_1024 = (plan.components[name].module()
                                 for name in ("t5_encoder", "base_unet", "sr_unet_256", "sr_unet_1024"))
    cascade = Cascade(cascade_config("tiny"), base.unet, [sr_256.unet, sr_1024.unet])
    noise = draw_noise(cascade.config, 1, steps, torch.Generator().manual_seed(5))
    base_noise, cascade_noise = ReplayNoise(runtime_order(noise[:1])), ReplayNoise(runtime_order(noise))
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1) as pipe:
        tokenizer = pipe.manifest.settings.tokenizer
        assert (tokenizer.kind, tokenizer.pad_token_id) == ("stand-in", 0)
        base_only = pipe(IMAGEN_PROMPT, num_inference_steps=steps, stages=1, generator=base_noise)
        result = pipe(IMAGEN_PROMPT, num_inference_steps=steps, generator=cascade_noise)
        tokens = pipe.tokenizer([""] + IMAGEN_PROMPT)
    assert base_noise.draws == [] and cascade_noise.draws == []  # both sides used every tensor
    with torch.no_grad():
        ids, mask = torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)
        embeddings = t5(ids, mask)
        expected = cascade(embeddings[1:], mask[1:], noise, uncond_embeddings=embeddings[:1], uncond_mask=mask[:1])
    for images, reference, size in [(base_only.images, expected[0], 64), (result.images, expected[-1], 1024)]:
        reference = to_uint8(reference.numpy())
        assert images.shape == reference.shape == (1, size, size, 3)
        difference = np.abs(images.astype(int) - reference.astype(int))
        assert difference.max() <= 2, (size, difference.max())
        assert images.std() > 1


@pytest.fixture(scope="module")
def deepfloyd(tmp_path_factory):
    """DeepFloyd IF stage I + II diffusers folders (tiny, random weights) exported as a two-stage cascade."""
    from genrt.export import imagen as imagen_export
    from genrt.export.options import Range
    from tests.export.test_deepfloyd import write_if_folder

    root = tmp_path_factory.mktemp("e2e_deepfloyd")
    options = ExportOptions(checkpoint=write_if_folder(root / "IF-I", False),
                            checkpoint_sr=write_if_folder(root / "IF-II", True), batch=Range(1, 1, 1))
    plan = imagen_export.plan(None, "fp32", options)
    export_folder(plan, root / "export")
    return plan, root / "export"


def test_deepfloyd_if_runtime_matches_sdk(deepfloyd):
    """The runtime's imagen pipeline on the two-stage IF export (16 -> 32 here) against a torch loop over the
    genrt.sdk IF U-Nets: DDPM with learned variance and IF's thresholding (p 0.95, max 1.5), guidance on the
    first 3 channels, the stage I image upsampled and noised at level 250 for stage II; same noise."""
    from genrt.sampling import DDPMSampler, NoiseSchedule, ScheduleConfig, classifier_free_guidance
    from genrt.sdk.imagen.augment import augment_low_res, upsample_low_res

    plan, folder = deepfloyd
    settings = plan.settings
    steps, sizes = [2, 2], [16, 32]
    generator = torch.Generator().manual_seed(9)
    noise = []  # per stage: augmentation (stage II), initial, one per step: the runtime's order
    for stage, (size, count) in enumerate(zip(sizes, steps)):
        noise.append([torch.randn(1, 3, size, size, generator=generator) for _ in range(count + 1 + stage)])
    replay = ReplayNoise([draw for stage in noise for draw in stage])
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1) as pipe:
        assert pipe.stages == ("base_unet", "sr_unet_256")
        result = pipe(IMAGEN_PROMPT, num_inference_steps=steps, generator=replay)
        tokens = pipe.tokenizer([""] + IMAGEN_PROMPT)
    assert replay.draws == []
    t5, base, sr = (plan.components[name].module() for name in ("t5_encoder", "base_unet", "sr_unet_256"))
    with torch.no_grad():
        mask = torch.from_numpy(tokens.attention_mask)
        text = t5(torch.from_numpy(tokens.input_ids), mask)  # [uncond; cond]
        image = None
        for stage, (unet, entry) in enumerate(zip([base.unet, sr.unet], settings.stages)):
            draws = list(noise[stage])
            schedule = ScheduleConfig(**entry.scheduler)
            extra = {}
            if image is not None:
                level = torch.tensor([settings.sr_noise_level])
                low_res = augment_low_res(upsample_low_res(image, sizes[stage]), level, draws.pop(0),
                                          NoiseSchedule(schedule))
                extra = {"low_res": torch.cat([low_res, low_res]), "noise_level": torch.cat([level, level])}
            sampler = DDPMSampler(schedule, dynamic_threshold_percentile=settings.threshold_percentile,
                                  dynamic_threshold_max=settings.threshold_max)
            x = draws.pop(0) * sampler.init_noise_sigma
            for t, step_noise in zip(sampler.set_timesteps(steps[stage]), draws):
                model_input = sampler.scale_model_input(x, t)
                # IF's U-Nets attend to every text position, padding included, as diffusers runs them
                output = unet(torch.cat([model_input, model_input]), torch.full((2,), float(t)), text, None, **extra)
                guided = classifier_free_guidance(output[:1, :3], output[1:, :3], entry.guidance_scale)
                x = sampler.step(torch.cat([guided, output[1:, 3:]], dim=1), t, x, step_noise)
            image = x.clamp(-1.0, 1.0)
    reference = to_uint8(image.numpy())
    assert result.images.shape == reference.shape == (1, 32, 32, 3)
    difference = np.abs(result.images.astype(int) - reference.astype(int))
    print(f"DeepFloyd IF runtime vs sdk: max {difference.max()}/255, image std {result.images.std():.1f}")
    assert difference.max() <= 2, difference.max()
    assert result.images.std() > 1
