"""The ldm_shapes recipe's folder: float16 weights that load back as float32, the CLIP tokenizer's own files
(writable, so `make train-demo` can write over them again) and a text encoder config that runs in float32."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file

from genrt.sdk.ldm.checkpoint import from_pretrained
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.text_encoder import load_tokenizer
from genrt.sdk.train.recipes import ldm_shapes as recipe


def test_the_folder_holds_float16_weights_that_load_as_the_rounded_model(tmp_path):
    torch.manual_seed(0)
    model = LatentDiffusion(recipe.CONFIG, load_tokenizer(recipe.TOKENIZER)).eval()
    folder = tmp_path / "pipeline"
    for _ in range(2):  # the second save replaces the first
        recipe.save_folder(model, folder)
    stored = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert {value.dtype for value in stored.values()} == {torch.float16}
    loaded = from_pretrained(folder)
    for name, value in model.unet.state_dict().items():
        assert loaded.unet.state_dict()[name].dtype == torch.float32
        assert torch.equal(loaded.unet.state_dict()[name], value.half().float()), name
    assert json.loads((folder / "text_encoder" / "config.json").read_text())["dtype"] == "float32"
    shipped = sorted(p.name for p in (folder / "tokenizer").iterdir())
    assert shipped == sorted(p.name for p in recipe.TOKENIZER.iterdir())
    assert all(os.access(folder / "tokenizer" / name, os.W_OK) for name in shipped)
    ids = recipe.tokenize(loaded.tokenizer, ["a red circle on a white background"], 77)
    assert ids[0, :3].tolist() == [49406, 320, 736]
