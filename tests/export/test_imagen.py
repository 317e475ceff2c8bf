"""Export of the tiny Imagen cascade: every component, fp32 and fp16, ORT parity, TensorRT-RTX.

The tiny U-Nets run here at stage resolutions 16 -> 32 -> 64 (they accept any multiple of their
stride), which keeps the parity runs at the max shapes fast.
"""

from __future__ import annotations

import dataclasses

import pytest

from genrt.errors import InputError
from genrt.export import imagen
from genrt.manifest import read_manifest
from genrt.export.options import ExportOptions, Range
from genrt.sdk.imagen.config import cascade_config, text_encoder_config
from tests.export import family_checks as checks

UNET_INPUTS = ["sample", "timestep", "text_embeddings", "text_mask"]
CONTRACT = {
    "t5_encoder": (["input_ids", "attention_mask"], ["text_embeddings"]),
    "base_unet": (UNET_INPUTS, ["model_output"]),
    "sr_unet_256": (UNET_INPUTS + ["low_res", "noise_level"], ["model_output"]),
    "sr_unet_1024": (UNET_INPUTS + ["low_res", "noise_level"], ["model_output"]),
}


def small_plan(precision: str):
    cascade = dataclasses.replace(cascade_config("tiny"), resolutions=(16, 32, 64))
    options = ExportOptions(random_weights=True, batch=Range(1, 1, 2))
    return imagen.plan_for(cascade, text_encoder_config("tiny-t5"), precision, options, "tiny")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, tmp_path_factory):
    return checks.export_once(small_plan(request.param), tmp_path_factory)


def test_registered_cascade_ranges_and_pipeline():
    plan = imagen.plan("tiny", "fp16", ExportOptions(random_weights=True))
    assert plan.components["base_unet"].profile()["sample"] == {
        "min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [8, 3, 64, 64]}
    # SR 256: stride 8, a quarter of 256 up to 256; SR 1024: stride 16
    assert plan.components["sr_unet_256"].profile()["low_res"]["min"] == [1, 3, 64, 64]
    assert plan.components["sr_unet_1024"].profile()["sample"]["max"] == [8, 3, 1024, 1024]
    assert plan.components["t5_encoder"].profile()["input_ids"] == {"min": [1, 1], "opt": [2, 16], "max": [8, 16]}
    stages = plan.settings.stages
    assert [s.component for s in stages] == ["base_unet", "sr_unet_256", "sr_unet_1024"]
    assert [s.scheduler["variance_type"] for s in stages] == ["learned_range", "fixed_small", "fixed_small"]
    assert stages[0].scheduler["beta_schedule"] == "cosine" and plan.settings.sr_noise_level == 250


def test_resolution_option_is_refused_for_the_fixed_cascade():
    with pytest.raises(InputError, match="fixed resolutions"):
        imagen.plan("tiny", "fp32", ExportOptions(random_weights=True, resolution=Range(64, 64, 64)))


def test_manifest_has_the_contract_components(exported):
    checks.check_contract(exported, CONTRACT)
    components = read_manifest(exported.out).components
    if exported.precision == "fp16":
        assert "t5_feed_forward" in components["t5_encoder"].fp32_islands
        assert {"group_norm", "layer_norm"} <= set(components["sr_unet_1024"].fp32_islands)


def test_ort_parity_at_min_opt_max(exported):
    rows = checks.check_parity_at_three_shapes(exported)
    assert min(r.rel for r in rows) > 0


def test_one_graph_answers_odd_multiples_of_the_stride(exported):
    checks.check_odd_shape(exported, "sr_unet_256", {"B": 3, "T": 5, "H": 24, "W": 16})
    checks.check_odd_shape(exported, "sr_unet_1024", {"B": 1, "T": 11, "H": 48, "W": 48})
    checks.check_odd_shape(exported, "t5_encoder", {"B": 3, "T": 7})
    checks.check_odd_shape(exported, "base_unet", {"B": 3, "T": 9})


def test_tensorrt_rtx_builds_every_component_and_rebuild_hits_the_cache(exported):
    checks.check_rtx_build_and_cache_hit(exported)


def test_export_from_a_component_keyed_checkpoint(tmp_path, capsys):
    import onnxruntime as ort
    import torch

    from genrt.cli import main
    from genrt.sdk.checkpoint import save_safetensors
    from genrt.sdk.imagen.config import imagen_unet_config
    from genrt.sdk.imagen.text_encoder import T5TextEncoder
    from genrt.sdk.imagen.unet import ImagenUNet
    from tests.conftest import relative_error
    from tests.runtime.tiny.exports import write_tokenizer

    torch.manual_seed(8)
    t5, base = T5TextEncoder(text_encoder_config("tiny-t5")).eval(), ImagenUNet(imagen_unet_config("tiny-base-64")).eval()
    tensors = {f"t5_encoder.{k}": v for k, v in t5.state_dict().items()}
    tensors |= {f"base_unet.{k}": v for k, v in base.state_dict().items()}
    save_safetensors(tensors, tmp_path / "imagen.safetensors")
    out = tmp_path / "export"
    command = ["export", "imagen", "--config", "tiny", "--checkpoint", str(tmp_path / "imagen.safetensors"),
               "--out", str(out), "--components", "t5_encoder", "base_unet", "--batch", "1"]
    assert main(command) == 2  # a checkpoint carries no tokenizer: the export asks for one, writes nothing
    assert "--tokenizer" in capsys.readouterr().err and not out.exists()
    assert main(command + ["--tokenizer", str(write_tokenizer(tmp_path / "tok", "t5"))]) == 0
    ids, mask = torch.randint(0, 64, (2, 16), dtype=torch.int32), torch.ones(2, 16, dtype=torch.int32)
    mask[1, 9:] = 0
    session = ort.InferenceSession(str(out / "t5_encoder/model.onnx"), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        expected = t5(ids, mask)
        sample, timestep = torch.randn(2, 3, 64, 64), torch.tensor([3.0, 700.0])
        expected_output = base(sample, timestep, expected, mask)
    assert relative_error(embeddings, expected) < 1e-4
    session = ort.InferenceSession(str(out / "base_unet/model.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                   "text_embeddings": expected.numpy(), "text_mask": mask.numpy()})
    assert relative_error(output, expected_output) < 1e-4
