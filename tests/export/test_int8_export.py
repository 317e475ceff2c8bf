"""--precision int8: the ldm U-Net statically quantised, its other components float32, each within its own parity
bound on ONNX Runtime CPU, a folder the runtime runs; refused (exit 2, one line) where it cannot serve."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import genrt.runtime
from genrt.cli import main
from genrt.export.parity import TOLERANCES
from genrt.manifest import read_manifest
from tests.export.test_cli import assert_bad_input, run

EXPORT = ["export", "ldm", "--config", "tiny", "--random-weights", "--precision", "int8"]


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "ldm"
    assert main(EXPORT + ["--components", "text_encoder", "unet", "vae_decoder", "--out", str(out)]) == 0
    return out


def _op_counts(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_only_the_unet_is_quantised_and_onnx_runtime_fuses_it(int8_folder, tmp_path):
    manifest = read_manifest(int8_folder)
    assert manifest.precision == "int8"
    unet = manifest.component("unet")
    ops = _op_counts(unet.onnx)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # + the weights' DQ
    assert "softmax" in unet.fp32_islands
    assert [t.dtype for t in unet.inputs + unet.outputs] == ["float32"] * 4  # the float32 graph's contract
    for name in ("text_encoder", "vae_decoder"):
        assert "QuantizeLinear" not in _op_counts(manifest.component(name).onnx)
        assert manifest.component(name).fp32_islands == ()
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(unet.onnx), options, providers=["CPUExecutionProvider"])
    fused = _op_counts(tmp_path / "optimized.onnx")
    assert fused["QLinearConv"] >= ops["Conv"] - 1  # the integer kernels run (conv_in may read the fp32 input)
    assert fused["QLinearConv"] > 0 and fused["Conv"] + fused["FusedConv"] <= 1


def test_parity_holds_each_component_to_its_own_bound(int8_folder, capsys):
    code, out, _ = run(capsys, "parity", int8_folder)
    assert code == 0 and "parity: 9/9 comparisons passed" in out, out
    records = {name: backends["onnxruntime-cpu"] for name, backends in read_manifest(int8_folder).parity.items()}
    assert records["unet"].tolerance == TOLERANCES["int8"]
    assert 1e-3 < records["unet"].rel < TOLERANCES["int8"]  # quantised, not the float32 graph
    for name in ("text_encoder", "vae_decoder"):
        assert records[name].tolerance == TOLERANCES["fp32"] and records[name].rel < 1e-5


def test_the_runtime_runs_an_int8_folder(int8_folder):
    with genrt.runtime.load(int8_folder, backend="onnxruntime-cpu", threads=1) as pipe:
        images = pipe("a red square", num_inference_steps=2, seed=0).images
    assert images.dtype == np.uint8 and images.shape == (1, 32, 32, 3) and images.std() > 0


@pytest.mark.parametrize("argv, message", [
    (["export", "vqgan", "--config", "tiny", "--random-weights", "--precision", "int8"],
     "an int8 export of vqgan encoder, decoder, prior would quantise nothing"),
    (EXPORT + ["--components", "vae_decoder"], "an int8 export of ldm vae_decoder would quantise nothing"),
])
def test_int8_without_a_component_to_quantise_is_refused(capsys, tmp_path, argv, message):
    assert_bad_input(capsys, argv + ["--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("trt, message", [
    ("tensorrt_rtx", "is an int8 export, made for ONNX Runtime's CPU kernels"),
    ("onnxruntime-cuda", "no ONNX Runtime CUDA fusions for int8 graphs"),
])
def test_engines_and_cuda_fusions_of_an_int8_folder_are_refused(int8_folder, capsys, trt, message):
    assert_bad_input(capsys, ["build", int8_folder, "--trt", trt], message)
