"""The shipped Imagen demo cascade (models/imagen-shapes): `genrt export` -> ONNX Runtime draws what the caption says.

The two DeepFloyd-IF diffusers folders (float16 weights) go through `genrt export imagen` in fp32 and fp16 and the
runtime samples the cascade at the folders' defaults (stage I 25 DDPM steps at guidance 4, stage II 4 steps at
guidance 1), one 128x128 image per caption; genrt.adherence scores them. The PyTorch reference is genrt.sdk's
IFCascadeReference on the same folders with the runtime's noise (same seed), so the fp32 runtime is held to its
images and fp16 to its rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genrt.cli import main as genrt_cli
from genrt.shapes import all_captions
from tests.models.checks import check_adherence, check_fp32_images

FOLDERS = Path(__file__).resolve().parents[2] / "models" / "imagen-shapes"
STAGE_I, STAGE_II = FOLDERS / "stage_I", FOLDERS / "stage_II"
CAPTIONS = list(all_captions())  # (36,) one image each
SEED = 0
DEFAULTS = ((25, 4), (4.0, 1.0))  # (steps, guidance) per stage, from the folders' model_index.json
pytestmark = pytest.mark.skipif(not (STAGE_I.is_dir() and STAGE_II.is_dir()),
                                reason="models/imagen-shapes is missing (make train-demo writes it)")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def pipe(request, tmp_path_factory):
    from genrt.runtime import load

    out = tmp_path_factory.mktemp(f"imagen-shapes-{request.param}") / "export"
    assert genrt_cli(["export", "imagen", "--checkpoint", str(STAGE_I), "--checkpoint-sr", str(STAGE_II),
                      "--sequence-length", "77", "--precision", request.param,
                      "--batch", f"1-{len(CAPTIONS)}-{len(CAPTIONS)}", "--out", str(out)]) == 0
    with load(out, backend="onnxruntime-cpu", threads=1) as pipeline:
        yield request.param, pipeline


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The sdk reference's 128x128 images (36, 128, 128, 3) uint8 at the defaults, the runtime's noise of ``SEED``."""
    from genrt.sdk.imagen.if_cascade import IFCascadeReference, to_uint8

    torch.set_num_threads(1)
    steps, guidance = DEFAULTS
    return to_uint8(IFCascadeReference(STAGE_I, STAGE_II)(CAPTIONS, steps, guidance, np.random.default_rng(SEED))[-1])


@pytest.fixture(scope="module")
def images(pipe) -> np.ndarray:
    """The runtime's 128x128 images (36, 128, 128, 3) uint8 at the folders' defaults."""
    _, pipeline = pipe
    assert (pipeline.default_steps, pipeline.default_guidance) == DEFAULTS
    return pipeline(CAPTIONS, seed=SEED).images


def test_diffusers_loads_the_folders_as_deepfloyd_if():
    diffusers = pytest.importorskip("diffusers")
    base = diffusers.IFPipeline.from_pretrained(str(STAGE_I), safety_checker=None, watermarker=None,
                                                feature_extractor=None, requires_safety_checker=False)
    sr = diffusers.IFSuperResolutionPipeline.from_pretrained(str(STAGE_II), safety_checker=None, watermarker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    assert type(base.scheduler).__name__ == type(sr.scheduler).__name__ == "DDPMScheduler"
    assert base.scheduler.config.variance_type == "learned_range" and sr.scheduler.config.variance_type == "fixed_small"
    assert sr.text_encoder is None and base.unet.config.sample_size == 32 and sr.unet.config.sample_size == 128
    assert base.tokenizer("a red circle").input_ids == [3, 9, 1131, 8196, 1]  # T5 v1.1 SentencePiece, as genrt reads


def test_adherence_through_the_runtime(pipe, images, reference):
    check_adherence(pipe[0], images, reference, CAPTIONS, size=128)


def test_runtime_images_equal_the_sdk_reference_on_the_same_noise(pipe, images, reference):
    check_fp32_images(pipe[0], images, reference)
