"""`genrt export vqgan --checkpoint VQMODEL_FOLDER` (no --config: the architecture comes from config.json) of a
folder diffusers' VQModel.save_pretrained wrote, then encode/decode on the fp32 runtime against diffusers:
the same code indices, decoded images within 2/255; VQModel fields genrt does not implement are refused."""

import json
import shutil

import numpy as np
import pytest
import torch

import genrt.runtime
from genrt.cli import main
from tests.diffusers_parity.sd_folders import max_difference, sample_image
from tests.sdk.ldm.conftest import randomise

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three levels (32, 64, 64) with attention at the lowest, 16 groups, 4-d codes, 32 of them (f = 4)."""
    model = diffusers.VQModel(
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, latent_channels=4,
        vq_embed_dim=4, num_vq_embeddings=32, sample_size=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"))
    randomise(model, 5)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():  # codes drawn from the encoder's own outputs, so that images use many of them
        latents = model.encode(torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1).latents  # (4, 4, 8, 8)
        pool = latents.permute(0, 2, 3, 1).reshape(-1, 4)
        model.quantize.embedding.weight.copy_(pool[torch.randperm(len(pool), generator=generator)[:32]])
    path = tmp_path_factory.mktemp("vqmodel") / "vqmodel"
    model.eval().save_pretrained(str(path))
    return path


def test_vqmodel_folder_exports_and_matches_diffusers(folder, tmp_path, capsys):
    assert main(["export", "vqgan", "--checkpoint", str(folder), "--out", str(tmp_path / "export")]) == 0
    capsys.readouterr()
    images = np.concatenate([sample_image(1), np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), np.uint8)])
    reference = diffusers.VQModel.from_pretrained(str(folder)).eval()
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        latents = reference.encode(pixels).latents
        _, _, (_, _, expected_codes) = reference.quantize(latents)
        decoded = reference.decode(latents).sample
    expected_images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    with genrt.runtime.load(tmp_path / "export", backend="onnxruntime-cpu", threads=1) as pipe:
        assert sorted(pipe.manifest.components) == ["decoder", "encoder"]
        codes = pipe.encode(images)
        result = pipe.decode(codes)
        with pytest.raises(genrt.errors.InputError, match="no prior"):
            pipe(0)
    np.testing.assert_array_equal(codes, expected_codes.reshape(2, 8, 8).numpy())
    assert len(np.unique(codes)) > 4  # the codes are not one constant
    difference = max_difference(result.images, expected_images)
    print(f"VQModel encode/decode vs diffusers: codes equal, images max {difference}/255")
    assert difference <= 2


@pytest.mark.parametrize("field, value, message", [
    ("norm_type", "spatial", "norm_type"),
    ("some_future_option", True, "some_future_option"),
])
def test_vqmodel_fields_genrt_does_not_implement_are_refused(folder, tmp_path, capsys, field, value, message):
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, field: value}))
    assert main(["export", "vqgan", "--checkpoint", str(changed), "--out", str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_vqmodel_folder_with_config_is_refused(folder, tmp_path, capsys):
    assert main(["export", "vqgan", "--config", "tiny", "--checkpoint", str(folder), "--out",
                 str(tmp_path / "export")]) == 2
    assert "drop --config" in capsys.readouterr().err
