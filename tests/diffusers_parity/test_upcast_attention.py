"""``upcast_attention: true`` in a diffusers SD2-like folder: a float16 export whose attention logits pass
float16's 65504 stays finite and within 2/255 of the float32 export; the same graph without upcast
overflows (Q.K^T is +-inf in float16, the softmax turns it into NaN)."""

import json
import shutil

import numpy as np
import pytest
import torch

import genrt.runtime
from tests.diffusers_parity.sd_folders import build, export_ldm, max_difference
from tests.runtime.tiny.common import TorchNoise

pytest.importorskip("diffusers")

PROMPT = ["a photograph of an astronaut riding a horse"]
SCALE = 150.0  # to_q = to_k = SCALE * I on one 32-channel head: self-logits ~ 32 * SCALE**2 / sqrt(32) ~ 1.3e5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(upcast folder, the same weights with upcast_attention false)."""
    root = tmp_path_factory.mktemp("upcast")
    pipe = build("sd2")
    attention = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attention.heads == 1 and attention.to_q.weight.shape == (32, 32)
    with torch.no_grad():
        attention.to_q.weight.copy_(torch.eye(32) * SCALE)
        attention.to_k.weight.copy_(torch.eye(32) * SCALE)
    pipe.save_pretrained(str(root / "upcast"))
    shutil.copytree(root / "upcast", root / "plain")
    config_file = root / "plain" / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    assert config["upcast_attention"] is True
    config_file.write_text(json.dumps({**config, "upcast_attention": False}))
    return root


def _unet_output(pipe) -> np.ndarray:
    rng = np.random.default_rng(0)
    return pipe.run("unet", sample=rng.standard_normal((2, 4, 8, 8), dtype=np.float32),
                    timestep=np.array([999.0, 500.0], dtype=np.float32),
                    encoder_hidden_states=rng.standard_normal((2, 77, 48), dtype=np.float32))["model_output"]


@pytest.fixture(scope="module")
def upcast_exports(folders):
    return {precision: export_ldm(folders / "upcast", folders / f"export-{precision}", precision)
            for precision in ("fp32", "fp16")}


def test_fp16_upcast_export_is_finite_and_matches_fp32(upcast_exports):
    images, outputs = {}, {}
    for precision, export in upcast_exports.items():
        with genrt.runtime.load(export, backend="onnxruntime-cpu", threads=1) as pipe:
            assert ("attention_upcast" in pipe.manifest.component("unet").fp32_islands) == (precision == "fp16")
            outputs[precision] = _unet_output(pipe)
            images[precision] = pipe(PROMPT, num_inference_steps=3, guidance_scale=5.0, generator=TorchNoise(1)).images
    assert np.isfinite(outputs["fp16"]).all()
    error = np.abs(outputs["fp16"] - outputs["fp32"]).max() / np.abs(outputs["fp32"]).max()
    difference = max_difference(images["fp16"], images["fp32"])
    print(f"fp16 upcast vs fp32: U-Net rel max error {error:.1e}, images max {difference}/255")
    assert error < 2e-2
    assert difference <= 2
    assert images["fp32"].std() > 5


def _matmul_types(onnx_file) -> list[int]:
    """The element type of every MatMul output of an exported graph (shape inference on the file)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_file), load_external_data=False))
    types = {info.name: info.type.tensor_type.elem_type for info in model.graph.value_info}
    return [types[node.output[0]] for node in model.graph.node if node.op_type == "MatMul"]


@pytest.fixture(scope="module")
def plain_fp16(folders):
    return export_ldm(folders / "plain", folders / "export-plain-fp16", "fp16")


def test_fp16_without_upcast_computes_attention_in_float16(upcast_exports, plain_fp16):
    """Without upcast_attention every MatMul of the float16 U-Net is float16, Q.K^T included (ONNX Runtime's CPU
    provider casts float16 MatMuls to float32 itself, so the overflow shows on GPUs: the test below); with it,
    Q.K^T and probabilities.V are float32 in each of the 3 attention layers of the upcast level and mid block."""
    import onnx

    with genrt.runtime.load(plain_fp16, backend="onnxruntime-cpu", threads=1) as pipe:
        assert "attention_upcast" not in pipe.manifest.component("unet").fp32_islands
    plain = _matmul_types(plain_fp16 / "unet" / "model.onnx")
    upcast = _matmul_types(upcast_exports["fp16"] / "unet" / "model.onnx")
    assert plain and set(plain) == {onnx.TensorProto.FLOAT16}
    # sd2's U-Net: attention in down level 0 (1 block), up level 1 (2 blocks) and the mid block, x2 attentions
    assert upcast.count(onnx.TensorProto.FLOAT) == 2 * 2 * 4


@pytest.mark.gpu
def test_fp16_without_upcast_overflows_on_cuda(plain_fp16):
    with genrt.runtime.load(plain_fp16, backend="onnxruntime-cuda") as pipe:
        assert not np.isfinite(_unet_output(pipe)).all()
