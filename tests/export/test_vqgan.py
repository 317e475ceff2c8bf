"""Export of the tiny VQGAN + GPT prior: every component, fp32 and fp16, ORT parity, TensorRT-RTX."""

from __future__ import annotations

import pytest
import torch

from genrt.errors import InputError
from genrt.export import vqgan
from genrt.manifest import read_manifest
from genrt.export.options import ExportOptions, Range
from tests.conftest import relative_error
from tests.export import family_checks as checks

CONTRACT = {
    "encoder": (["image"], ["indices"]),
    "decoder": (["indices"], ["image"]),
    "prior": (["input_ids", "position", "past_key_values"], ["logits", "present_key_values"]),
}


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, tmp_path_factory):
    plan = vqgan.plan("tiny", request.param, ExportOptions(random_weights=True))
    return checks.export_once(plan, tmp_path_factory)


def test_prior_component_is_the_cached_gpt_forward():
    """The exported wrapper = GPTPrior.forward for a prefix (P = 0) and a cached step (P = 5)."""
    plan = vqgan.plan("tiny", "fp32", ExportOptions(random_weights=True, sequence_length=Range(1, 3, 6)))
    spec = plan.components["prior"]
    wrapper = spec.module()
    gpt = wrapper.prior
    ids = torch.randint(0, 16, (2, 6))
    with torch.no_grad():
        full_logits, full_cache = gpt(ids)
        empty = torch.zeros(2, 2, 2, 2, 0, 16)
        prefix_logits, cache = wrapper(ids[:, :5].int(), torch.tensor([0], dtype=torch.int32), empty)
        step_logits, step_cache = wrapper(ids[:, 5:].int(), torch.tensor([5], dtype=torch.int32), cache)
    assert relative_error(prefix_logits, full_logits[:, :5]) < 1e-6
    assert relative_error(step_logits, full_logits[:, 5:]) < 1e-6
    assert relative_error(step_cache, full_cache) < 1e-6
    assert spec.profile()["past_key_values"]["max"] == [2, 2, 4, 2, 63, 16]  # block_size 64 - 1: one-token steps


def test_near_tie_mask_marks_only_a_few_codes():
    plan = vqgan.plan("tiny", "fp16", ExportOptions(random_weights=True))
    spec = plan.components["encoder"]
    inputs = spec.sample_inputs("max", seed=3)
    ties = spec.near_ties(inputs)["indices"]
    assert ties.shape == (4, 16, 16) and ties.dtype == torch.bool
    assert ties.float().mean() < 0.25  # the allowance covers real near ties, not every code


def test_bad_resolution_and_sequence_length_are_refused():
    with pytest.raises(InputError, match="resolution 17 is not a multiple of 2"):
        vqgan.plan("tiny", "fp32", ExportOptions(resolution=Range(8, 17, 32), random_weights=True))
    with pytest.raises(InputError, match="exceeds the prior's block_size 64"):
        vqgan.plan("tiny", "fp32", ExportOptions(sequence_length=Range(1, 1, 65), random_weights=True))


def test_settings_name_the_classes_of_a_prior_with_condition_names():
    from genrt.sdk.vqgan.config import prior_config, vqgan_config
    from genrt.shapes import all_captions

    named = vqgan.vqgan_settings(vqgan_config("shapes"), prior_config("shapes"))
    assert named.class_names == all_captions() and named.condition_vocab_size == 36
    assert vqgan.vqgan_settings(vqgan_config("tiny"), prior_config("tiny")).class_names == ()


def test_manifest_has_the_contract_components(exported):
    checks.check_contract(exported, CONTRACT)
    islands = {"fp32": (), "fp16": ("codebook_search", "group_norm", "softmax")}[exported.precision]
    assert read_manifest(exported.out).components["encoder"].fp32_islands == islands


def test_ort_parity_at_min_opt_max(exported):
    rows = checks.check_parity_at_three_shapes(exported)
    assert max(r.rel for r in rows if r.component == "decoder") > 0
    assert [r.max_abs for r in rows if r.component == "encoder"] == [0.0, 0.0, 0.0]


def test_one_graph_answers_odd_multiples_and_an_empty_cache(exported):
    checks.check_odd_shape(exported, "encoder", {"B": 3, "H": 20, "W": 28})
    checks.check_odd_shape(exported, "decoder", {"B": 2, "h": 5, "w": 13})
    checks.check_odd_shape(exported, "prior", {"B": 3, "T": 1, "P": 0})
    checks.check_odd_shape(exported, "prior", {"B": 2, "T": 1, "P": 37})


def test_tensorrt_rtx_builds_every_component_and_rebuild_hits_the_cache(exported):
    checks.check_rtx_build_and_cache_hit(exported)


def _taming_checkpoint(path, with_prior: bool):
    from genrt.sdk.vqgan.autoencoder import VQModel
    from genrt.sdk.vqgan.checkpoint import to_taming_state_dict
    from genrt.sdk.vqgan.config import prior_config, vqgan_config
    from genrt.sdk.vqgan.prior import GPTPrior

    torch.manual_seed(5)
    model, prior = VQModel(vqgan_config("tiny")).eval(), GPTPrior(prior_config("tiny")).eval()
    torch.save({"state_dict": to_taming_state_dict(model, prior if with_prior else None)}, path)
    return model, prior


def test_export_from_taming_checkpoints(tmp_path, capsys):
    import onnxruntime as ort

    from genrt.cli import main

    model, prior = _taming_checkpoint(tmp_path / "cond.ckpt", with_prior=True)
    out = tmp_path / "cond"
    assert main(["export", "vqgan", "--config", "tiny", "--checkpoint", str(tmp_path / "cond.ckpt"),
                 "--out", str(out), "--components", "decoder", "prior"]) == 0
    indices = torch.randint(0, 16, (2, 6, 10), dtype=torch.int32)
    session = ort.InferenceSession(str(out / "decoder/model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.decode_indices(indices)
    assert relative_error(session.run(None, {"indices": indices.numpy()})[0], expected) < 1e-4
    ids = torch.randint(0, 16, (2, 1), dtype=torch.int32)
    session = ort.InferenceSession(str(out / "prior/model.onnx"), providers=["CPUExecutionProvider"])
    logits, _ = session.run(None, {"input_ids": ids.numpy(), "position": [0],
                                   "past_key_values": torch.zeros(2, 2, 2, 2, 0, 16).numpy()})
    with torch.no_grad():
        expected_logits, _ = prior(ids.long())
    assert relative_error(logits, expected_logits) < 1e-4
    assert main(["parity", str(out)]) == 0

    _taming_checkpoint(tmp_path / "vq.ckpt", with_prior=False)
    code = main(["export", "vqgan", "--config", "tiny", "--checkpoint", str(tmp_path / "vq.ckpt"),
                 "--out", str(tmp_path / "vq"), "--components", "prior"])
    assert code == 2 and "choose from encoder, decoder" in capsys.readouterr().err
