"""genrt against diffusers' own StableDiffusionPipeline / StableDiffusionImg2ImgPipeline, loaded from the
folder diffusers saved: export -> ONNX Runtime fp32 runtime, same noise, images within 2/255."""

import numpy as np
import pytest
import torch
from PIL import Image

import genrt.runtime
from tests.diffusers_parity.sd_folders import export_ldm, max_difference, sample_image, save
from tests.runtime.tiny_pipelines import TorchNoise

diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photograph of an astronaut riding a horse", "A cat &amp; a dog (in the snow:1.2) 🐱"]
# (architecture, diffusers scheduler class made from the real folder's scheduler config, changes to that
# config, genrt sampler name). The changes are those genrt's samplers do not read from a folder yet
# (set_alpha_to_one false, Euler's default linspace spacing): issue 11's scheduler-config work.
CASES = [
    ("sd2", "DDIMScheduler", {"set_alpha_to_one": True}, "ddim"),
    ("sd1", "DDIMScheduler", {"set_alpha_to_one": True}, "ddim"),
    ("sd1", "EulerDiscreteScheduler", {"timestep_spacing": "leading"}, "euler"),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(case[:2]))
def exported(request, tmp_path_factory):
    kind, scheduler_class, changes, sampler = request.param
    root = tmp_path_factory.mktemp(f"{kind}-{scheduler_class}")
    folder = save(kind, root / "pipeline", scheduler_class, **changes)
    return folder, export_ldm(folder, root / "export"), sampler


def _diffusers_images(pipe, **kwargs) -> np.ndarray:
    with torch.no_grad():
        images = pipe(**kwargs, output_type="np").images  # (B, H, W, 3) float in [0, 1]
    return np.round(images * 255).astype(np.uint8)


def test_text2img_matches_diffusers(exported):
    folder, export, sampler = exported
    reference = diffusers.StableDiffusionPipeline.from_pretrained(str(folder))
    expected = _diffusers_images(reference, prompt=PROMPTS, num_inference_steps=5, guidance_scale=6.0,
                                 generator=torch.Generator().manual_seed(7))
    with genrt.runtime.load(export, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS, num_steps=5, guidance_scale=6.0, generator=TorchNoise(7))
    assert result.images.shape == expected.shape == (2, 32, 32, 3)
    difference = max_difference(result.images, expected)
    print(f"{folder}: text2img vs diffusers max {difference}/255")
    assert difference <= 2
    assert expected.std() > 5  # not a flat image


def test_img2img_matches_diffusers(exported):
    folder, export, sampler = exported
    image = sample_image()
    reference = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(str(folder))
    expected = _diffusers_images(reference, prompt=PROMPTS[:1], image=Image.fromarray(image[0]), strength=0.6,
                                 num_inference_steps=5, guidance_scale=6.0, generator=torch.Generator().manual_seed(3))
    with genrt.runtime.load(export, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS[:1], image=image, strength=0.6, num_steps=5, guidance_scale=6.0,
                      generator=TorchNoise(3))
    difference = max_difference(result.images, expected)
    print(f"{folder}: img2img vs diffusers max {difference}/255")
    assert difference <= 2
