"""The shipped VQGAN demo model (models/vqgan-shapes): `genrt export` -> ONNX Runtime draws what the caption says.

The taming checkpoint goes through `genrt export` in fp32 and fp16 and is sampled by the runtime at the
manifest's default settings, prompted by caption; genrt.adherence scores the images. The PyTorch
reference samples the same checkpoint with genrt.sdk (its own random draws), so fp16 is held to the
reference's rate, not to its images; the runtime decoder is held to the sdk decoder on the same codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genrt.adherence import score
from genrt.cli import main as genrt_cli
from genrt.errors import InputError
from genrt.shapes import all_captions

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "vqgan-shapes" / "last.ckpt"
DRAWS = 3  # images per caption
CAPTIONS = [caption for caption in all_captions() for _ in range(DRAWS)]  # (108,)
pytestmark = pytest.mark.skipif(not CHECKPOINT.is_file(), reason="models/vqgan-shapes/last.ckpt is missing "
                                "(make train-demo writes it)")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def pipe(request, tmp_path_factory):
    from genrt.runtime import load

    out = tmp_path_factory.mktemp(f"vqgan-shapes-{request.param}") / "export"
    assert genrt_cli(["export", "vqgan", "--config", "shapes", "--checkpoint", str(CHECKPOINT), "--precision",
                  request.param, "--batch", f"1-{len(CAPTIONS)}-{len(CAPTIONS)}", "--resolution", "64",
                  "--out", str(out)]) == 0
    with load(out, backend="onnxruntime-cpu", threads=1) as pipeline:
        yield request.param, pipeline


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """sdk images (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as the runtime rounds."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def reference_rate() -> float:
    """Adherence of the PyTorch (genrt.sdk, fp32) samples of the checkpoint at the export's defaults
    (temperature 1, no top-k / top-p: GPTPrior.sample's defaults)."""
    from genrt.sdk.vqgan.checkpoint import load_taming_prior, load_taming_vqgan

    vqgan, prior = load_taming_vqgan(CHECKPOINT, "shapes"), load_taming_prior(CHECKPOINT, "shapes")
    condition = torch.tensor([[all_captions().index(c)] for c in CAPTIONS])
    with torch.no_grad():
        codes = prior.sample(condition, 64, generator=torch.Generator().manual_seed(0))
        images = vqgan.decode_indices(codes.reshape(-1, 8, 8))
    return score(to_uint8(images), CAPTIONS).rate


def sample(pipeline, seed: int = 0):
    """Images (108, 64, 64, 3) uint8 and codes (108, 64) of one call over every caption."""
    last = {}

    def keep(pipe, step_index, timestep, tensors):
        last["codes"] = tensors["codes"]

    result = pipeline(prompt=CAPTIONS, seed=seed, callback_on_step_end=keep)
    return result.images, last["codes"]


def test_adherence_through_the_runtime(pipe, reference_rate):
    precision, pipeline = pipe
    images, _ = sample(pipeline)
    result = score(images, CAPTIONS)
    assert images.shape == (len(CAPTIONS), 64, 64, 3) and images.dtype == np.uint8
    if precision == "fp32":
        assert result.rate >= 0.9, result
    else:
        assert abs(result.rate - reference_rate) <= 0.05, (result, reference_rate)


def test_runtime_decoder_equals_the_sdk_decoder_on_the_same_codes(pipe):
    precision, pipeline = pipe
    if precision != "fp32":
        pytest.skip("the 2/255 bound is the fp32 one")
    from genrt.sdk.vqgan.checkpoint import load_taming_vqgan

    images, codes = sample(pipeline, seed=1)
    with torch.no_grad():
        reference = load_taming_vqgan(CHECKPOINT, "shapes").decode_indices(torch.from_numpy(codes).reshape(-1, 8, 8))
    assert np.abs(images.astype(np.int16) - to_uint8(reference).astype(np.int16)).max() <= 2


def test_genrt_run_draws_a_caption(pipe, tmp_path):
    precision, pipeline = pipe
    caption = "a purple triangle on a black background"
    assert genrt_cli(["run", str(pipeline.manifest.root), "--prompt", caption, "--seed", "3", "--backend",
                  "onnxruntime-cpu", "--threads", "1", "--no-progress", "--out", str(tmp_path / "x.png")]) == 0
    written = np.asarray(Image.open(tmp_path / "x.png").convert("RGB"))
    assert np.array_equal(written, pipeline(prompt=caption, seed=3).images[0])


def test_a_prompt_outside_the_classes_is_refused_naming_them(pipe, tmp_path, capsys):
    precision, pipeline = pipe
    with pytest.raises(InputError, match="a purple triangle on a black background"):
        pipeline(prompt="a pink hexagon on a grey background")
    code = genrt_cli(["run", str(pipeline.manifest.root), "--prompt", "a pink hexagon", "--no-progress",
                  "--out", str(tmp_path / "x.png")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "x.png").exists()
    assert len(error.splitlines()) == 1 and "'a pink hexagon' is not one of" in error
    assert all(repr(caption) in error for caption in all_captions())
