"""The shipped latent-diffusion demo model (models/ldm-shapes): `genrt export` -> ONNX Runtime draws what the
caption says.

The diffusers folder (float16 weights) goes through `genrt export` in fp32 and fp16 and is sampled by the runtime
at the manifest's defaults (the folder's DDIM, 50 steps, guidance 7.5), one image per caption; genrt.adherence
scores the images. The PyTorch reference is genrt.sdk's StableDiffusionReference on the same folder with the
runtime's noise (same seed), so the fp32 runtime is held to its images and fp16 to its rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genrt.cli import main as genrt_cli
from genrt.shapes import all_captions
from tests.models.checks import check_adherence, check_fp32_images

FOLDER = Path(__file__).resolve().parents[2] / "models" / "ldm-shapes"
CAPTIONS = list(all_captions())  # (36,) one image each
SEED = 0


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def pipe(request, tmp_path_factory):
    from genrt.runtime import load

    out = tmp_path_factory.mktemp(f"ldm-shapes-{request.param}") / "export"
    assert genrt_cli(["export", "ldm", "--checkpoint", str(FOLDER), "--precision", request.param,
                      "--components", "text_encoder", "unet", "vae_decoder",
                      "--batch", f"1-{len(CAPTIONS)}-{len(CAPTIONS)}", "--resolution", "64", "--out", str(out)]) == 0
    with load(out, backend="onnxruntime-cpu", threads=1) as pipeline:
        yield request.param, pipeline


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The sdk reference's images (36, 64, 64, 3) uint8 at its defaults, the runtime's noise of ``SEED``."""
    from genrt.sdk.ldm.checkpoint import from_pretrained
    from genrt.sdk.ldm.pipeline import StableDiffusionReference

    torch.set_num_threads(1)
    return StableDiffusionReference(from_pretrained(FOLDER))(CAPTIONS, seed=SEED).images


@pytest.fixture(scope="module")
def images(pipe) -> np.ndarray:
    """The runtime's images (36, 64, 64, 3) uint8 at the manifest's defaults."""
    _, pipeline = pipe
    assert (pipeline.default_steps, pipeline.default_guidance) == (50, 7.5)
    return pipeline(CAPTIONS, seed=SEED).images


def test_diffusers_loads_the_folder_as_stable_diffusion():
    diffusers = pytest.importorskip("diffusers")
    loaded = diffusers.StableDiffusionPipeline.from_pretrained(str(FOLDER), safety_checker=None,
                                                               requires_safety_checker=False)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert {loaded.unet.dtype, loaded.vae.dtype, loaded.text_encoder.dtype} == {torch.float32}
    assert loaded.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]  # CLIP BPE, as genrt reads it


def test_adherence_through_the_runtime(pipe, images, reference):
    check_adherence(pipe[0], images, reference, CAPTIONS, size=64)


def test_runtime_images_equal_the_sdk_reference_on_the_same_noise(pipe, images, reference):
    check_fp32_images(pipe[0], images, reference)
