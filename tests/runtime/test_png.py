"""PNGs carry their generation parameters (iTXt chunk), from `genrt run` and from png_bytes directly."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from genrt.cli import main
from genrt.runtime.png import png_bytes, png_parameters
from tests.runtime.tiny.ldm import build_ldm


def test_png_round_trip_keeps_pixels_and_unicode_parameters():
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    data = png_bytes(image, {"prompt": "un chat noir, 猫", "seed": 3, "guidance_scale": 7.5})
    assert png_parameters(data) == {"prompt": "un chat noir, 猫", "seed": 3, "guidance_scale": 7.5}
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


def test_genrt_run_writes_its_parameters_into_each_png(tmp_path):
    folder = build_ldm(tmp_path / "ldm")
    out = tmp_path / "cat.png"
    assert main(["run", str(folder), "--prompt", "a cat", "--negative-prompt", "a dog", "--steps", "2", "--seed", "4",
                 "--guidance", "3", "--num-images", "2", "--out", str(out), "--backend", "onnxruntime-cpu",
                 "--no-progress"]) == 0
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    for index in range(2):
        written = png_parameters((tmp_path / f"cat_{index}.png").read_bytes())
        assert written == {"prompt": "a cat", "negative_prompt": "a dog", "num_inference_steps": 2, "seed": 4,
                           "guidance_scale": 3.0, "height": 64, "width": 64, "num_images": 2, "index": index,
                           "manifest_sha256": digest}
