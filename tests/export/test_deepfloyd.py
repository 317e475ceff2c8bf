"""`genrt export imagen --checkpoint IF_I --checkpoint-sr IF_II`: DeepFloyd IF diffusers folders (tiny, random
weights written by diffusers/transformers here) -> t5_encoder, base_unet, sr_unet_256; ORT parity against the
genrt.sdk modules (`genrt parity`) and against diffusers' own U-Nets; one-line errors for wrong folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genrt.cli import main
from genrt.manifest import ShapeRange, read_manifest
from genrt.sdk.imagen.config import if_unet_config
from tests.conftest import relative_error
from tests.runtime.tiny.exports import write_tokenizer

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

# DeepFloyd/IF-I-XL-v1.0 and IF-II-L-v1.0 scheduler/scheduler_config.json (DDPMScheduler).
IF_SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001,
    "clip_sample": True, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.95, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.5, "thresholding": True, "variance_type": "learned_range",
}
# IF-II-L-v1.0 image_noising_scheduler/scheduler_config.json.
IF_NOISING_SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "thresholding": False,
    "variance_type": "fixed_small",
}
TEXT_WIDTH = 48  # encoder_hid_dim of the tiny IF U-Nets


def diffusers_unet(config_name: str, seed: int):
    from tests.sdk.imagen.test_if_unet import _randomise, diffusers_kwargs

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**diffusers_kwargs(if_unet_config(config_name))).eval()
    _randomise(unet)
    return unet


def write_if_folder(folder: Path, stage_two: bool) -> Path:
    """A DeepFloyd IF pipeline folder as save_pretrained lays it out, tiny random weights."""
    folder.mkdir(parents=True)
    unet = diffusers_unet("tiny-if-stage2" if stage_two else "tiny-if-stage1", seed=1 + stage_two)
    unet.save_pretrained(folder / "unet")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(IF_SCHEDULER))
    index = {"_class_name": "IFSuperResolutionPipeline" if stage_two else "IFPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"]}
    if stage_two:
        (folder / "image_noising_scheduler").mkdir()
        (folder / "image_noising_scheduler" / "scheduler_config.json").write_text(json.dumps(IF_NOISING_SCHEDULER))
    else:
        torch.manual_seed(3)
        t5 = transformers.T5EncoderModel(transformers.T5Config(
            vocab_size=40, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False))
        t5.save_pretrained(folder / "text_encoder")
        write_tokenizer(folder / "tokenizer", "t5")
        index |= {"text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepfloyd")
    return write_if_folder(root / "IF-I-tiny", False), write_if_folder(root / "IF-II-tiny", True)


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("deepfloyd_export") / "if"
    stage1, stage2 = folders
    code = main(["export", "imagen", "--checkpoint", str(stage1), "--checkpoint-sr", str(stage2), "--out", str(out),
                 "--batch", "1-1-2"])
    assert code == 0
    return out


def test_manifest_components_and_if_pipeline_settings(exported):
    manifest = read_manifest(exported)
    assert (manifest.config, manifest.family) == ("deepfloyd-if-IF-I-tiny", "imagen")
    components = manifest.components
    assert list(components) == ["t5_encoder", "base_unet", "sr_unet_256"]
    assert [i.name for i in components["sr_unet_256"].inputs] == [
        "sample", "timestep", "text_embeddings", "low_res", "noise_level"]  # no text_mask: IF attends to padding
    assert components["base_unet"].inputs[0].shape == ("B", 3, 16, 16)
    assert components["base_unet"].outputs[0].shape == ("B", 6, 16, 16)
    assert components["sr_unet_256"].profile["sample"] == ShapeRange((1, 3, 8, 8), (2, 3, 32, 32), (4, 3, 32, 32))
    assert components["t5_encoder"].profile["input_ids"] == ShapeRange((1, 1), (2, 77), (4, 77))
    settings = manifest.settings
    assert [(s.component, s.resolution, s.guidance_scale, s.num_steps) for s in settings.stages] == [
        ("base_unet", 16, 7.0, 100), ("sr_unet_256", 32, 4.0, 50)]
    for stage in settings.stages:
        assert stage.scheduler["beta_schedule"] == "cosine"
        assert stage.scheduler["variance_type"] == "learned_range"
    assert (settings.threshold_percentile, settings.threshold_max) == (0.95, 1.5)
    assert (settings.sampler, settings.sr_noise_level, settings.max_length) == ("ddpm", 250, 77)
    assert settings.tokenizer.kind == "folder" and (exported / "tokenizer" / "tokenizer.json").is_file()
    assert manifest.export_options.checkpoint_sr.endswith("IF-II-tiny")


def test_genrt_parity_passes(exported, capsys):
    code, out, _ = run(capsys, "parity", exported)
    assert code == 0, out
    print(out)
    assert "parity: 9/9 comparisons passed" in out  # 3 components at the min, opt and max shapes


@pytest.mark.parametrize("component", ["base_unet", "sr_unet_256"])
def test_onnx_unets_match_diffusers(exported, component):
    """The exported graphs against diffusers' UNet2DConditionModel of the same folders (no text mask, as
    diffusers' IF pipelines)."""
    stage_two = component == "sr_unet_256"
    reference = diffusers_unet("tiny-if-stage2" if stage_two else "tiny-if-stage1", seed=1 + stage_two)
    size = 32 if stage_two else 16
    g = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 3, size, size, generator=g)
    timestep = torch.tensor([3.0, 871.0])
    text = torch.randn(2, 9, TEXT_WIDTH, generator=g)
    feeds = {"sample": sample.numpy(), "timestep": timestep.numpy(), "text_embeddings": text.numpy()}
    with torch.no_grad():
        if stage_two:
            low_res = torch.rand(2, 3, size, size, generator=g) * 2 - 1
            level = torch.tensor([250, 40])
            feeds |= {"low_res": low_res.numpy(), "noise_level": level.numpy().astype(np.int32)}
            expected = reference(torch.cat([sample, low_res], 1), timestep, text, class_labels=level).sample
        else:
            expected = reference(sample, timestep, text).sample
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(exported / component / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    (output,) = session.run(["model_output"], feeds)
    assert output.shape == (2, 6, size, size) and output.dtype == np.float32
    error = relative_error(torch.from_numpy(output), expected)
    print(f"{component} ONNX vs diffusers: rel err {error:.2e}")
    assert error < 1e-4


def test_stage_one_alone_is_a_one_stage_cascade(folders):
    from genrt.export import imagen
    from genrt.export.options import ExportOptions

    plan = imagen.plan(None, "fp16", ExportOptions(checkpoint=folders[0]))
    assert list(plan.components) == ["t5_encoder", "base_unet"]
    assert [(s.component, s.num_steps) for s in plan.settings.stages] == [("base_unet", 100)]
    assert "t5_feed_forward" in plan.components["t5_encoder"].fp32_modules  # fp16 T5 as for the Imagen cascade


@pytest.fixture()
def not_if_folder(folders, tmp_path):
    """A copy of stage I whose U-Net is Stable-Diffusion-like (SiLU, no text projection)."""
    copy = tmp_path / "sd-like"
    shutil.copytree(folders[0], copy)
    config = json.loads((copy / "unet" / "config.json").read_text())
    (copy / "unet" / "config.json").write_text(json.dumps(config | {"act_fn": "silu", "encoder_hid_dim_type": None}))
    return copy


@pytest.mark.parametrize("case, message", [
    ("stage2_as_stage1", "holds a DeepFloyd IF stage II U-Net, --checkpoint takes stage I"),
    ("stage1_as_stage2", "holds a DeepFloyd IF stage I U-Net, --checkpoint-sr takes stage II"),
    ("not_if", "is not a DeepFloyd IF pipeline"),
    ("no_model_index", "is not a diffusers pipeline folder (no model_index.json)"),
    ("config_with_folder", "drop --config"),
    ("sr_without_folder", "--checkpoint-sr needs a DeepFloyd IF stage I folder"),
])
def test_wrong_folders_are_one_line_input_errors(case, message, folders, not_if_folder, tmp_path, capsys):
    stage1, stage2 = folders
    argv = {
        "stage2_as_stage1": ["--checkpoint", stage2],
        "stage1_as_stage2": ["--checkpoint", stage1, "--checkpoint-sr", stage1],
        "not_if": ["--checkpoint", not_if_folder],
        "no_model_index": ["--checkpoint", stage1 / "unet"],
        "config_with_folder": ["--checkpoint", stage1, "--config", "tiny"],
        "sr_without_folder": ["--checkpoint", stage1 / "unet" / "config.json", "--checkpoint-sr", stage2,
                              "--config", "tiny"],
    }[case]
    code, _, err = run(capsys, "export", "imagen", *argv, "--out", tmp_path / "out")
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("defaults, expected", [
    ({"guidance_scale": 5, "num_inference_steps": 12}, [("base_unet", 5.0, 12), ("sr_unet_256", 4.0, 50)]),
    ({"guidance_scale": 5.0, "num_inference_steps": 0}, "num_inference_steps 0"),
    ({"num_inference_steps": 12}, "_genrt_defaults is {'num_inference_steps': 12}"),
])
def test_a_folder_may_carry_its_own_guidance_and_steps(defaults, expected, folders, tmp_path):
    from genrt.errors import CheckpointError
    from genrt.export import imagen
    from genrt.export.options import ExportOptions

    stage1 = tmp_path / "IF-I-own-defaults"
    shutil.copytree(folders[0], stage1)
    index = json.loads((stage1 / "model_index.json").read_text())
    (stage1 / "model_index.json").write_text(json.dumps(index | {"_genrt_defaults": defaults}))
    options = ExportOptions(checkpoint=stage1, checkpoint_sr=folders[1])
    if isinstance(expected, str):
        with pytest.raises(CheckpointError, match=expected):
            imagen.plan(None, "fp32", options)
    else:
        plan = imagen.plan(None, "fp32", options)
        assert [(s.component, s.guidance_scale, s.num_steps) for s in plan.settings.stages] == expected
