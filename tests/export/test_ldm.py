"""Export of the tiny latent-diffusion model: every component, fp32 and fp16, ORT parity, TensorRT-RTX."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from genrt.errors import InputError
from genrt.export import ldm
from genrt.manifest import read_manifest
from genrt.export.options import ExportOptions, Range
from tests.conftest import relative_error
from tests.export import family_checks as checks

CONTRACT = {
    "text_encoder": (["input_ids"], ["text_embeddings"]),
    "unet": (["sample", "timestep", "encoder_hidden_states"], ["model_output"]),
    "vae_decoder": (["latent"], ["image"]),
    "vae_encoder": (["image"], ["latent_moments"]),
}


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, tmp_path_factory):
    plan = ldm.plan("tiny", request.param, ExportOptions(random_weights=True))
    return checks.export_once(plan, tmp_path_factory)


def test_ranges_follow_batch_guidance_and_vae_factor():
    plan = ldm.plan("tiny", "fp32", ExportOptions(batch=Range(1, 2, 3), resolution=Range(16, 32, 48),
                                                  random_weights=True))
    # tiny: VAE factor 2, U-Net factor 2 -> resolutions are multiples of 4 pixels
    assert plan.components["unet"].profile()["sample"] == {
        "min": [1, 4, 8, 8], "opt": [4, 4, 16, 16], "max": [6, 4, 24, 24]}
    assert plan.components["text_encoder"].profile()["input_ids"]["max"] == [6, 77]
    assert plan.components["vae_decoder"].profile()["latent"]["max"] == [3, 4, 24, 24]
    assert plan.components["vae_encoder"].profile()["image"]["opt"] == [2, 3, 32, 32]
    assert plan.settings.latent_scaling_factor == 0.18215
    assert plan.settings.scheduler["beta_schedule"] == "scaled_linear"


def test_resolution_not_divisible_by_the_model_factor_is_refused():
    with pytest.raises(InputError, match="resolution 30 is not a multiple of 4"):
        ldm.plan("tiny", "fp32", ExportOptions(resolution=Range(16, 30, 48), random_weights=True))
    with pytest.raises(InputError, match="resolution 500 is not a multiple of 64"):
        ldm.plan("sd15", "fp16", ExportOptions(resolution=Range(500, 500, 500), random_weights=True))


def test_manifest_has_the_contract_components(exported):
    checks.check_contract(exported, CONTRACT)
    if exported.precision == "fp16":
        components = read_manifest(exported.out).components
        assert components["unet"].fp32_islands == ("group_norm", "layer_norm", "softmax")
        assert components["text_encoder"].fp32_islands == ("layer_norm",)


def test_ort_parity_at_min_opt_max(exported):
    rows = checks.check_parity_at_three_shapes(exported)
    assert max(r.rel for r in rows) > 0  # a real comparison, not the reference against itself


def test_one_graph_answers_odd_multiples_of_the_factors(exported):
    checks.check_odd_shape(exported, "unet", {"B": 3, "h": 10, "w": 14})
    checks.check_odd_shape(exported, "vae_decoder", {"B": 3, "h": 10, "w": 18})
    checks.check_odd_shape(exported, "vae_encoder", {"B": 1, "H": 20, "W": 36})


def test_tensorrt_rtx_builds_every_component_and_rebuild_hits_the_cache(exported):
    checks.check_rtx_build_and_cache_hit(exported)


@pytest.fixture(scope="module")
def tiny_model():
    from genrt.sdk.ldm.config import get_config
    from genrt.sdk.ldm.model import LatentDiffusion

    torch.manual_seed(21)
    return LatentDiffusion(get_config("tiny")).eval()


def _ort_unet(folder, inputs):
    session = ort.InferenceSession(str(folder / "unet/model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def test_export_from_a_diffusers_folder_uses_its_weights_and_config(tiny_model, tmp_path, capsys):
    from genrt.cli import main
    from tests.runtime.tiny.exports import write_tokenizer
    from genrt.sdk.ldm.checkpoint import save_pretrained

    save_pretrained(tiny_model, tmp_path / "my-sd")
    tokenizer = write_tokenizer(tmp_path / "tok", "clip")
    out = tmp_path / "export"
    assert main(["export", "ldm", "--checkpoint", str(tmp_path / "my-sd"), "--out", str(out),
                 "--components", "unet", "--tokenizer", str(tokenizer)]) == 0
    manifest = read_manifest(out)
    assert manifest.config == "my-sd" and manifest.settings.tokenizer.folder == "tokenizer/"
    assert (out / "tokenizer/tokenizer.json").read_bytes() == (tokenizer / "tokenizer.json").read_bytes()
    assert manifest.settings.tokenizer.kind == "folder"
    inputs = {"sample": torch.randn(2, 4, 8, 12), "timestep": torch.tensor([10.0, 900.0]),
              "encoder_hidden_states": torch.randn(2, 77, 32)}
    with torch.no_grad():
        expected = tiny_model.unet(*inputs.values())
    assert relative_error(_ort_unet(out, inputs), expected) < 1e-4
    assert main(["parity", str(out)]) == 0
    assert "3/3 comparisons passed" in capsys.readouterr().out


def test_export_from_an_original_single_file(tiny_model, tmp_path):
    from genrt.cli import main
    from genrt.sdk.ldm.checkpoint import save_original

    save_original(tiny_model, tmp_path / "sd.safetensors")
    out = tmp_path / "export"
    assert main(["export", "ldm", "--config", "tiny", "--checkpoint", str(tmp_path / "sd.safetensors"),
                 "--out", str(out), "--components", "unet"]) == 0
    inputs = {"sample": torch.randn(1, 4, 16, 8), "timestep": torch.tensor([500.0]),
              "encoder_hidden_states": torch.randn(1, 77, 32)}
    with torch.no_grad():
        expected = tiny_model.unet(*inputs.values())
    assert relative_error(_ort_unet(out, inputs), expected) < 1e-4
