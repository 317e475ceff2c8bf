"""`genrt build --trt onnxruntime-cuda`: ONNX Runtime's CUDA fusions of a tiny fp16 ldm U-Net (made on the CPU).

The fused graph needs the CUDA provider to run; here its op counts are checked, and that the plain graph
the CPU runs is left byte for byte as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import onnx
import pytest
import torch
from onnx import TensorProto
from torch import nn

from genrt.cli import main
from genrt.export.cuda_fusion import fuse_for_cuda, op_counts
from genrt.export.folder import export_folder
from genrt.export.ldm import plan
from genrt.export.options import ExportOptions
from genrt.manifest import read_manifest

pytest.importorskip("onnxruntime.transformers.optimizer")


def _with_trained_norms(factory):
    """Norm layers with non-trivial gamma/beta, as in a real checkpoint (random init has 1 and 0, which the
    graph clean-up folds away, and with them the GroupNorm pattern)."""

    def module():
        model = factory()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, (nn.GroupNorm, nn.LayerNorm)):
                    layer.weight.copy_(1 + 0.1 * torch.randn(layer.weight.shape, generator=generator))
                    layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
        return model

    return module


def _export_unet(directory, trained_norms: bool, component: str = "unet"):
    full = plan("tiny", "fp16", ExportOptions(random_weights=True, seed=0))
    spec = full.components[component]
    if trained_norms:
        spec = dataclasses.replace(spec, module=_with_trained_norms(spec.module))
    export_folder(dataclasses.replace(full, components={component: spec}), directory)
    return directory


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    return _export_unet(tmp_path_factory.mktemp("fusion") / "ldm", trained_norms=True)


def test_build_writes_a_fused_graph_and_leaves_the_cpu_graph_untouched(unet_folder, capsys):
    plain = unet_folder / "unet/model.onnx"
    before = plain.read_bytes()
    manifest_before = json.loads((unet_folder / "manifest.json").read_text())["components"]["unet"]["sha256"]
    assert main(["build", str(unet_folder), "--trt", "onnxruntime-cuda"]) == 0
    out = capsys.readouterr().out
    assert "fused in" in out and "MultiHeadAttention 8" in out

    assert plain.read_bytes() == before  # the CPU graph: same bytes, same recorded hash
    entry = read_manifest(unet_folder).components["unet"]
    assert entry.sha256 == manifest_before == hashlib.sha256(before).hexdigest()
    (record,) = [e for e in entry.engines if e.flavour == "onnxruntime-cuda"]
    assert record.sha256 == hashlib.sha256(record.path.read_bytes()).hexdigest()

    original, fused = op_counts(onnx.load(str(plain))), op_counts(onnx.load(str(record.path)))
    assert fused["MultiHeadAttention"] == 8 == original["Softmax"]  # 4 transformer blocks x (self, cross)
    assert "Softmax" not in fused
    assert fused["BiasSplitGelu"] == original["Erf"] == 4  # the GEGLU of each feed-forward
    assert "Gelu" not in fused and "Slice" not in fused
    assert fused.get("GroupNorm", 0) + fused.get("SkipGroupNorm", 0) == original["InstanceNormalization"] == 21
    assert "InstanceNormalization" not in fused
    assert fused["NhwcConv"] == original["Conv"] - fused.get("Conv", 0) > 0
    assert fused["SkipLayerNormalization"] + fused["LayerNormalization"] == original["LayerNormalization"]
    assert len(onnx.load(str(record.path)).graph.node) < len(onnx.load(str(plain)).graph.node) / 2

    graph = onnx.load(str(record.path)).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert types == {"sample": TensorProto.FLOAT16, "timestep": TensorProto.FLOAT,
                     "encoder_hidden_states": TensorProto.FLOAT16, "model_output": TensorProto.FLOAT16}

    assert main(["build", str(unet_folder), "--trt", "onnxruntime-cuda"]) == 0
    assert "cache hit" in capsys.readouterr().out
    assert plain.read_bytes() == before


def test_a_damaged_fused_graph_is_rebuilt(unet_folder, capsys):
    assert main(["build", str(unet_folder), "--trt", "onnxruntime-cuda"]) == 0
    (record,) = [e for e in read_manifest(unet_folder).components["unet"].engines if e.flavour == "onnxruntime-cuda"]
    record.path.write_bytes(record.path.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["build", str(unet_folder), "--trt", "onnxruntime-cuda"]) == 0
    assert "fused in" in capsys.readouterr().out
    (again,) = [e for e in read_manifest(unet_folder).components["unet"].engines if e.flavour == "onnxruntime-cuda"]
    assert again.sha256 == hashlib.sha256(again.path.read_bytes()).hexdigest() != hashlib.sha256(b"").hexdigest()


def test_tensorrt_flags_are_refused_with_onnxruntime_cuda(unet_folder, capsys):
    assert main(["build", str(unet_folder), "--trt", "onnxruntime-cuda", "--compute-capability", "8.6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--compute-capability applies to TensorRT engines" in err


def test_fusion_survives_a_graph_whose_gelu_pattern_crashed_onnxruntime(tmp_path):
    """Random-init norms (gamma 1, beta 0 folded away) leave GroupNorm -> SiLU as x*gamma -> Sigmoid -> Mul,
    where ONNX Runtime's QuickGelu fusion called .item() on the gamma vector."""
    folder = _export_unet(tmp_path / "ldm", trained_norms=False)
    fused = op_counts(fuse_for_cuda(onnx.load(str(folder / "unet/model.onnx")), "unet"))
    assert fused["MultiHeadAttention"] == 8 and fused.get("QuickGelu", 0) == 0


def test_vae_decoder_gets_nhwc_group_norms_and_convolutions(tmp_path):
    folder = _export_unet(tmp_path / "ldm", trained_norms=True, component="vae_decoder")
    original = op_counts(onnx.load(str(folder / "vae_decoder/model.onnx")))
    fused = op_counts(fuse_for_cuda(onnx.load(str(folder / "vae_decoder/model.onnx")), "vae"))
    assert fused["GroupNorm"] + fused.get("SkipGroupNorm", 0) == original["InstanceNormalization"] == 14
    assert fused["NhwcConv"] == original["Conv"] == 17 and "Conv" not in fused
