"""The vqgan_shapes recipe's checkpoint writer: a taming cond-transformer .ckpt of fp16 weights that genrt's
taming loaders read back into the same fp32 modules."""

from __future__ import annotations

import torch

from genrt.sdk.train.recipes.vqgan_shapes import save_taming
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.checkpoint import load_taming_prior, load_taming_vqgan
from genrt.sdk.vqgan.config import prior_config, vqgan_config
from genrt.sdk.vqgan.prior import GPTPrior


def test_saved_checkpoint_holds_fp16_weights_that_load_into_fp32_modules(tmp_path):
    torch.manual_seed(0)
    vqgan, prior = VQModel(vqgan_config("tiny")).eval(), GPTPrior(prior_config("tiny")).eval()
    save_taming(vqgan, prior, tmp_path / "model" / "last.ckpt")
    stored = torch.load(tmp_path / "model" / "last.ckpt", weights_only=True)
    assert set(stored) == {"state_dict"}
    assert {value.dtype for value in stored["state_dict"].values()} == {torch.float16}
    assert all(key.startswith(("first_stage_model.", "transformer.")) for key in stored["state_dict"])

    loaded_vqgan = load_taming_vqgan(tmp_path / "model" / "last.ckpt", "tiny")
    loaded_prior = load_taming_prior(tmp_path / "model" / "last.ckpt", "tiny")
    for original, loaded in ((vqgan, loaded_vqgan), (prior, loaded_prior)):
        theirs = loaded.state_dict()
        for name, value in original.state_dict().items():
            if value.is_floating_point():
                assert theirs[name].dtype == torch.float32
                torch.testing.assert_close(theirs[name], value.half().float(), rtol=0, atol=0)
