"""genrt against diffusers' own StableDiffusionPipeline / StableDiffusionImg2ImgPipeline, loaded from the
folder diffusers saved: export -> ONNX Runtime fp32 runtime, same noise, images within 2/255."""

import numpy as np
import pytest
import torch
from PIL import Image

import genrt.runtime
from tests.diffusers_parity.sd_folders import export_ldm, max_difference, sample_image, save
from tests.runtime.tiny.common import TorchNoise

diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photograph of an astronaut riding a horse", "A cat &amp; a dog (in the snow:1.2) 🐱"]
# (architecture, diffusers scheduler class made from the real folder's scheduler config, genrt sampler name:
# None runs the folder's class, as diffusers does). SD 1.5 ships PNDM (skip_prk_steps, steps_offset 1,
# set_alpha_to_one false), SD 2.1 DDIM v-prediction with set_alpha_to_one false; neither names
# timestep_spacing, so Euler and LMS take their class default (linspace).
SWITCHED = {"euler": "EulerDiscreteScheduler"}
CASES = [
    ("sd2", "DDIMScheduler", None),
    ("sd1", "PNDMScheduler", None),
    ("sd1", "LMSDiscreteScheduler", None),
    ("sd1", "EulerDiscreteScheduler", None),
    ("sd1", "PNDMScheduler", "euler"),  # switching at run time: diffusers' from_config of the folder's config
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(filter(None, case)))
def exported(request, tmp_path_factory):
    kind, scheduler_class, sampler = request.param
    root = tmp_path_factory.mktemp(f"{kind}-{scheduler_class}")
    folder = save(kind, root / "pipeline", scheduler_class)
    return folder, export_ldm(folder, root / "export"), sampler


def _reference(pipeline_class, folder, sampler):
    """diffusers' pipeline from ``folder``, its scheduler switched with from_config when ``sampler`` is named."""
    pipe = pipeline_class.from_pretrained(str(folder))
    if sampler is not None:
        pipe.scheduler = getattr(diffusers, SWITCHED[sampler]).from_config(pipe.scheduler.config)
    return pipe


def _diffusers_images(pipe, **kwargs) -> np.ndarray:
    with torch.no_grad():
        images = pipe(**kwargs, output_type="np").images  # (B, H, W, 3) float in [0, 1]
    return np.round(images * 255).astype(np.uint8)


def test_text2img_matches_diffusers(exported):
    folder, export, sampler = exported
    reference = _reference(diffusers.StableDiffusionPipeline, folder, sampler)
    expected = _diffusers_images(reference, prompt=PROMPTS, num_inference_steps=5, guidance_scale=6.0,
                                 generator=torch.Generator().manual_seed(7))
    with genrt.runtime.load(export, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS, num_inference_steps=5, guidance_scale=6.0, generator=TorchNoise(7))
    assert result.images.shape == expected.shape == (2, 32, 32, 3)
    difference = max_difference(result.images, expected)
    print(f"{folder}: text2img vs diffusers max {difference}/255")
    assert difference <= 2
    assert expected.std() > 5  # not a flat image


def test_img2img_matches_diffusers(exported):
    folder, export, sampler = exported
    image = sample_image()
    reference = _reference(diffusers.StableDiffusionImg2ImgPipeline, folder, sampler)
    expected = _diffusers_images(reference, prompt=PROMPTS[:1], image=Image.fromarray(image[0]), strength=0.6,
                                 num_inference_steps=5, guidance_scale=6.0, generator=torch.Generator().manual_seed(3))
    with genrt.runtime.load(export, backend="onnxruntime-cpu", sampler=sampler, threads=1) as pipe:
        result = pipe(PROMPTS[:1], image=image, strength=0.6, num_inference_steps=5, guidance_scale=6.0,
                      generator=TorchNoise(3))
    difference = max_difference(result.images, expected)
    print(f"{folder}: img2img vs diffusers max {difference}/255")
    assert difference <= 2
