"""genrt against diffusers' IFPipeline -> IFSuperResolutionPipeline loaded from the folders diffusers saved:
``genrt export imagen --checkpoint IF_I --checkpoint-sr IF_II`` -> ONNX Runtime fp32 runtime with the same
noise; stage I and final images within 2/255, for a short prompt (mostly padding: the T5 embeddings at
padding positions and the unmasked U-Nets matter) and one past T5's 77 tokens (truncated)."""

import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.cli import main
from tests.diffusers_parity.if_folders import save_stage_one, save_stage_two
from tests.diffusers_parity.sd_folders import max_difference

diffusers = pytest.importorskip("diffusers")

# upper case and outer spaces: diffusers' IF pipelines lower() and strip() prompts (clean_caption=False)
PROMPTS = ["  A Red PANDA eating bamboo ", "a watercolour painting of " + "a very tall lighthouse and " * 12 + "the sea"]
STEPS = (4, 3)  # DDPM steps of stage I and II
GUIDANCE = (7.0, 4.0)
SHAPES = ((2, 3, 16, 16), (2, 3, 32, 32))  # the tiny stages' images, batch of two prompts


class Replay:
    """A runtime noise source handing out given arrays in order (checking each shape)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = list(arrays)

    def standard_normal(self, size, dtype=np.float32):
        array = self.arrays.pop(0)
        assert array.shape == tuple(size), (array.shape, size)
        return array.astype(dtype)


def _draws(seed: int, shape: tuple, count: int) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).numpy() for _ in range(count)]


def genrt_noise(stages: int) -> Replay:
    """diffusers' draws in genrt's order. diffusers, per stage with its own generator: stage I x_T, then one
    tensor per step with t > 0; stage II x_T, the augmentation noise, then the steps. genrt, from one source:
    the augmentation noise (stage II), x_T, then one tensor per step (the one of t = 0 goes unused)."""
    first = _draws(11, SHAPES[0], STEPS[0])
    arrays = first + [np.zeros(SHAPES[0], np.float32)]
    if stages == 2:
        second = _draws(12, SHAPES[1], STEPS[1] + 1)
        arrays += [second[1], second[0]] + second[2:] + [np.zeros(SHAPES[1], np.float32)]
    return Replay(arrays)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepfloyd_parity")
    stage1, stage2 = save_stage_one(root / "IF-I"), save_stage_two(root / "IF-II")
    assert main(["export", "imagen", "--checkpoint", str(stage1), "--checkpoint-sr", str(stage2),
                 "--out", str(root / "export")]) == 0
    return stage1, stage2, root / "export"


def _diffusers_cascade(stage1_folder, stage2_folder) -> tuple[np.ndarray, np.ndarray]:
    stage1 = diffusers.IFPipeline.from_pretrained(str(stage1_folder))
    stage2 = diffusers.IFSuperResolutionPipeline.from_pretrained(str(stage2_folder))
    with torch.no_grad():
        embeds, negative = stage1.encode_prompt(PROMPTS, do_classifier_free_guidance=True, clean_caption=False)
        low = stage1(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=STEPS[0],
                     guidance_scale=GUIDANCE[0], generator=torch.Generator().manual_seed(11), output_type="pt").images
        high = stage2(image=low, prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=STEPS[1],
                      guidance_scale=GUIDANCE[1], generator=torch.Generator().manual_seed(12), noise_level=250,
                      output_type="np").images
    low = ((low.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    return low, np.round(high * 255).astype(np.uint8)


def test_if_cascade_matches_diffusers(folders):
    stage1_folder, stage2_folder, export = folders
    expected_low, expected_high = _diffusers_cascade(stage1_folder, stage2_folder)
    with genrt.runtime.load(export, backend="onnxruntime-cpu", threads=1) as pipe:
        with pytest.warns(UserWarning, match="tokens"):  # the long prompt is truncated, as diffusers does
            low = pipe(PROMPTS, num_inference_steps=list(STEPS), guidance_scale=list(GUIDANCE), stages=1,
                       generator=genrt_noise(1)).images
            high = pipe(PROMPTS, num_inference_steps=list(STEPS), guidance_scale=list(GUIDANCE),
                        generator=genrt_noise(2)).images
    assert low.shape == expected_low.shape == (2, 16, 16, 3) and high.shape == expected_high.shape == (2, 32, 32, 3)
    print(f"IF stage I vs diffusers max {max_difference(low, expected_low)}/255, "
          f"stage II {max_difference(high, expected_high)}/255")
    assert max_difference(low, expected_low) <= 2
    assert max_difference(high, expected_high) <= 2
    assert expected_high.std() > 5
