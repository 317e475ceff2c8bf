"""Checkpoint loading: diffusers VQModel parity, taming .ckpt round trips, and clear errors."""

import json
from dataclasses import replace

import pytest
import torch

from genrt.errors import CheckpointError
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.checkpoint import (
    load_diffusers_vqgan,
    load_taming_loss,
    load_taming_prior,
    load_taming_vqgan,
    to_taming_loss_state_dict,
    to_taming_state_dict,
)
from genrt.sdk.vqgan.config import VQGANLossConfig, prior_config, vqgan_config
from genrt.sdk.vqgan.losses import VQGANLoss
from genrt.sdk.vqgan.prior import GPTPrior
from tests.conftest import relative_error


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial values everywhere (norm affines and biases included)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.1).add_(1.0 if parameter.ndim == 1 else 0.0)


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    reference = diffusers.VQModel(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=8, vq_embed_dim=6,
        num_vq_embeddings=16, sample_size=16,
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    ).eval()
    with torch.no_grad():
        reference.quantize.embedding.weight.normal_()
    folder = tmp_path_factory.mktemp("diffusers_vq")
    reference.save_pretrained(folder)
    return reference, folder


def test_diffusers_vqmodel_parity(diffusers_folder):
    reference, folder = diffusers_folder
    ours = load_diffusers_vqgan(folder)
    assert ours.config.attn_resolutions == (8,) and ours.config.embed_dim == 6 and ours.config.norm_groups == 8
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = reference.encode(image).latents
        ref_quant, _, (_, _, ref_indices) = reference.quantize(latents)
        ref_image = reference.decode(latents).sample
        quant, _, indices = ours.encode(image)
        decoded = ours.decode_indices(indices)
    assert torch.equal(indices, ref_indices.reshape(2, 8, 8))
    assert relative_error(quant, ref_quant) < 1e-6
    err = relative_error(decoded, ref_image)
    print(f"diffusers VQModel decode rel err {err:.2e}")
    assert err < 1e-5


def test_diffusers_errors(diffusers_folder, tmp_path):
    _, folder = diffusers_folder
    with pytest.raises(CheckpointError, match="no config.json"):
        load_diffusers_vqgan(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "up_block_types": ["UpDecoderBlock2D"] * 2}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(
        (folder / "diffusion_pytorch_model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"encoder attention at \[8\] but decoder attention at \[\]"):
        load_diffusers_vqgan(tmp_path)


def test_taming_vqgan_ckpt_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VQModel(vqgan_config("tiny")).eval()
    _randomise(model)
    state = to_taming_state_dict(model)
    assert state["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "encoder.down.1.block.0.nin_shortcut.weight" in state and "quantize.embedding.weight" in state
    state["loss.discriminator.main.0.weight"] = torch.zeros(1)  # training state in real ckpts: ignored
    path = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)

    loaded = load_taming_vqgan(path, "tiny")
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected_quant, _, expected_indices = model.encode(image)
        quant, _, indices = loaded.encode(image)
        assert torch.equal(indices, expected_indices) and torch.equal(quant, expected_quant)
        assert torch.equal(loaded.decode(quant), model.decode(expected_quant))


def test_taming_cond_transformer_round_trip(tmp_path):
    torch.manual_seed(0)
    model, prior = VQModel(vqgan_config("tiny")).eval(), GPTPrior(prior_config("tiny")).eval()
    _randomise(prior)
    state = to_taming_state_dict(model, prior)
    assert state["transformer.blocks.0.attn.query.weight"].shape == (32, 32)
    assert "transformer.blocks.1.mlp.2.bias" in state and "transformer.pos_emb" in state
    state["transformer.blocks.0.attn.mask"] = torch.ones(1, 1, 64, 64).tril()  # minGPT's mask buffer
    path = tmp_path / "cond.ckpt"
    torch.save({"state_dict": state}, path)

    loaded_prior = load_taming_prior(path, "tiny")
    loaded_vqgan = load_taming_vqgan(path, "tiny")
    ids = torch.randint(0, 16, (2, 20))
    assert torch.equal(loaded_prior(ids)[0], prior(ids)[0])
    image = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded_vqgan.encode(image)[2], model.encode(image)[2])


def test_taming_loss_state_round_trip(tmp_path):
    torch.manual_seed(0)
    config = VQGANLossConfig(disc_ndf=8, disc_num_layers=2)
    loss = VQGANLoss(config)
    _randomise(loss)
    model = VQModel(vqgan_config("tiny"))
    state = {**to_taming_state_dict(model), **to_taming_loss_state_dict(loss)}
    # taming's layout: torchvision indices inside the LPIPS slices, heads behind a dropout
    assert state["loss.perceptual_loss.net.slice1.2.weight"].shape == (64, 64, 3, 3)
    assert state["loss.perceptual_loss.net.slice5.28.bias"].shape == (512,)
    assert state["loss.perceptual_loss.lin4.model.1.weight"].shape == (1, 512, 1, 1)
    assert "loss.discriminator.main.3.running_var" in state
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    path = _save(tmp_path, state)

    loaded = load_taming_loss(path, config).eval()
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.perceptual_loss(x, y), loss.perceptual_loss(x, y))
        assert torch.equal(loaded.discriminator(x), loss.eval().discriminator(x))
    with pytest.raises(CheckpointError, match="no 'loss"):
        load_taming_loss(_save(tmp_path, to_taming_state_dict(model)), config)


def test_taming_errors_name_file_and_keys(tmp_path):
    model = VQModel(vqgan_config("tiny"))
    state = to_taming_state_dict(model)
    del state["decoder.conv_out.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"broken\.ckpt.*missing keys: decoder\.conv_out\.bias.*"
                                              r"unexpected keys: encoder\.extra\.weight"):
        load_taming_vqgan(path, "tiny")
    with pytest.raises(CheckpointError, match=r"1 shape mismatches: quantize\.embedding\.weight \(16, 8\) vs expected \(32, 8\)"):
        load_taming_vqgan(_save(tmp_path, to_taming_state_dict(model)), replace(vqgan_config("tiny"), n_embed=32))
    with pytest.raises(CheckpointError, match="no 'transformer"):
        load_taming_prior(_save(tmp_path, to_taming_state_dict(model)), "tiny")
    with pytest.raises(CheckpointError, match="not found"):
        load_taming_vqgan(tmp_path / "absent.ckpt", "tiny")


def _save(folder, state):
    path = folder / "model.ckpt"
    torch.save({"state_dict": state}, path)
    return path
