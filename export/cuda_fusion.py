"""ONNX Runtime CUDA fusions of genrt's half-precision graphs, as ONNX Runtime's own Stable Diffusion tools make them.

``onnxruntime.transformers.optimizer`` turns attention into MultiHeadAttention (packed QKV / KV, flash
attention on CUDA), GroupNorm + SiLU into GroupNorm (NHWC), the GEGLU of the feed-forward into
BiasSplitGelu, LayerNorm + residual into SkipLayerNormalization and convolutions into NhwcConv. Its
patterns are those of a float32 export, and genrt's fp16 graphs differ in two ways that matter:

1. Float32 islands: Cast nodes around GroupNorm, LayerNorm and Softmax hide the patterns. The graph is
   lifted to float32 first (every float16 tensor, constant and Cast becomes float32, so the island Casts
   become no-ops the optimizer removes), fused, then converted back to float16 with ONNX Runtime's
   converter, keeping genrt's float32 inputs/outputs (``timestep``) as they are. The fused kernels keep
   their statistics in float32, as the islands did.
2. Two crashes of ONNX Runtime's fusions on such graphs, avoided here by subclassing: the QuickGelu
   fusion reads the constant of any ``x * sigmoid(x * c)`` as a scalar and fails on GroupNorm's gamma
   (a vector) in ``GroupNorm -> SiLU``; the attention fusion's head count from a torch 2 graph calls
   ``int()`` on a one-element array, which numpy 2 refuses.
3. ONNX Runtime's BiasSplitGelu fusion expects the GEGLU halves cut at bounds computed from ``Shape``
   (older exporters); genrt's clean-up leaves constant bounds, so the U-Net optimizer here fuses
   ``Add(bias) -> Slice [0, D/2) * Gelu(Slice [D/2, D))`` itself, checking every bound.

The result runs on ONNX Runtime's CUDA provider only (its contrib ops have no CPU kernels).
``genrt build DIR --trt onnxruntime-cuda`` (:func:`build_cuda_graphs`) writes it as
``COMPONENT/model-cuda-<key>.onnx`` beside the plain graph, which is never changed, and records it among the
component's engines with flavour ``onnxruntime-cuda`` (``trt_version``: the ONNX Runtime version). Cached
like an engine: reused only while its file has the recorded sha256.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from genrt.errors import InputError, require
from genrt.fileio import write_bytes_atomic
from genrt.manifest import FUSED_GRAPH_FLAVOUR as FLAVOUR
from genrt.manifest import EngineRecord, read_manifest, replace_component, write_manifest

log = logging.getLogger(__name__)
FUSION_VERSION = 2  # bump when what fuse_for_cuda does changes: it enters the cache key
PROTOBUF_LIMIT = 2**31 - 1  # bytes: the largest graph one protobuf file holds

# component name -> ONNX Runtime model type whose fusions apply
COMPONENT_KINDS = {"unet": "unet", "base_unet": "unet", "sr_unet_256": "unet", "sr_unet_1024": "unet",
                   "vae_decoder": "vae", "vae_encoder": "vae", "text_encoder": "clip"}
FUSED_OPS = ("MultiHeadAttention", "GroupNorm", "SkipGroupNorm", "BiasSplitGelu", "NhwcConv",
             "SkipLayerNormalization", "LayerNormalization", "BiasAdd", "QuickGelu", "Attention")


def lift_to_float32(model) -> None:
    """Make every float16 tensor of ``model`` (an onnx ModelProto, changed in place) float32."""
    onnx = require("onnx", extra="export")
    from onnx import TensorProto, numpy_helper

    def lifted(tensor):
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    graph = model.graph
    for index, initializer in enumerate(graph.initializer):
        if initializer.data_type == TensorProto.FLOAT16:
            graph.initializer[index].CopyFrom(lifted(initializer))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT16:
                attribute.t.CopyFrom(lifted(attribute.t))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT


def _model_classes():
    """ONNX Runtime's U-Net / VAE / CLIP optimizers, with the two crashes and the GEGLU pattern above handled."""
    from onnx import helper
    from onnxruntime.transformers.fusion_attention_unet import FusionAttentionUnet
    from onnxruntime.transformers.fusion_base import Fusion
    from onnxruntime.transformers.fusion_fastgelu import FusionFastGelu
    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.fusion_quickgelu import FusionQuickGelu
    from onnxruntime.transformers.onnx_model_clip import ClipOnnxModel
    from onnxruntime.transformers.onnx_model_unet import UnetOnnxModel
    from onnxruntime.transformers.onnx_model_vae import VaeOnnxModel

    class ScalarQuickGelu(FusionQuickGelu):
        """QuickGelu only where the Mul under the Sigmoid multiplies by a one-element constant."""

        def fuse(self, node, input_name_to_nodes, output_name_to_node):
            path = self.model.match_parent_path(node, ["Sigmoid", "Mul"], [1, 0]) if node.op_type == "Mul" else None
            factor = None if path is None else self.model.get_constant_value(path[1].input[1])
            if factor is not None and np.size(factor) == 1:
                super().fuse(node, input_name_to_nodes, output_name_to_node)

    class AttentionFusion(FusionAttentionUnet):
        """Reads the head count of a (B, S, heads, d) reshape with ``.item()``, which numpy 2 allows."""

        def get_num_heads(self, reshape_q, is_torch2: bool = False) -> int:
            shape_source = self.model.get_parent(reshape_q, 1)
            if is_torch2 and shape_source is not None and shape_source.op_type == "Concat" \
                    and len(shape_source.input) == 4:
                heads = self.model.get_constant_value(shape_source.input[2])  # (1,) entry of a Concat'ed shape
            else:
                shape = self.model.get_constant_value(reshape_q.input[1])  # (4,) constant shape
                heads = shape[2:3] if isinstance(shape, np.ndarray) and shape.shape == (4,) else None
            return int(np.asarray(heads).item()) if heads is not None and np.size(heads) == 1 else 0

    class ConstantSplitGelu(Fusion):
        """BiasSplitGelu over constant-bound Slices: ``(x + b)[..., :h] * Gelu((x + b)[..., h:2h])``, b of length 2h."""

        def __init__(self, model):
            super().__init__(model, "BiasSplitGelu", "Gelu")

        def fuse(self, gelu, input_name_to_nodes, output_name_to_node):
            children = input_name_to_nodes.get(gelu.output[0], [])
            if len(children) != 1 or children[0].op_type != "Mul":
                return
            mul = children[0]
            gate = self.model.match_parent(gelu, "Slice", 0, output_name_to_node)
            value = self.model.match_parent(mul, "Slice", 0, output_name_to_node)
            if gate is None or value is None or gate.input[0] != value.input[0]:
                return
            add = output_name_to_node.get(gate.input[0])
            if add is None or add.op_type != "Add":
                return
            bias_index, bias = self.model.get_constant_input(add)
            if not isinstance(bias_index, int) or bias.ndim != 1 or bias.shape[0] % 2 or len(value.input) != 4 \
                    or len(gate.input) != 4:
                return
            half = bias.shape[0] // 2
            bounds = [self.model.get_constant_value(name) for name in (*value.input[1:], *gate.input[1:])]
            if any(b is None or np.size(b) != 1 for b in bounds):
                return
            start, end, axis, gate_start, gate_end, gate_axis = (int(np.asarray(b).item()) for b in bounds)
            if (start, end, axis, gate_start, gate_axis) != (0, half, -1, half, -1) or gate_end < 2 * half:
                return
            subgraph = [add, value, gate, gelu, mul]
            if not self.model.is_safe_to_fuse_nodes(subgraph, [mul.output[0]], input_name_to_nodes,
                                                    output_name_to_node):
                return
            fused = helper.make_node("BiasSplitGelu", [add.input[1 - bias_index], add.input[bias_index]],
                                     [mul.output[0]], name=self.model.create_node_name("BiasSplitGelu"),
                                     domain="com.microsoft")
            self.nodes_to_remove.extend(subgraph)
            self.nodes_to_add.append(fused)
            self.node_name_to_graph_name[fused.name] = self.this_graph_name

    class Fixes:
        def fuse_gelu(self):
            for fusion in (FusionGelu(self), FusionFastGelu(self), ScalarQuickGelu(self)):
                fusion.apply()

        def fuse_multi_head_attention(self, options=None):
            for cross in (False, True):
                AttentionFusion(self, self.hidden_size, self.num_heads, is_cross_attention=cross,
                                enable_packed_qkv=not cross and (options is None or options.enable_packed_qkv),
                                enable_packed_kv=cross and (options is None or options.enable_packed_kv)).apply()

    # UnetOnnxModel.optimize is _optimize under a tqdm progress bar on stderr; genrt's commands print one line
    class Unet(Fixes, UnetOnnxModel):
        def optimize(self, options=None):
            self._optimize(options, None)
            ConstantSplitGelu(self).apply()
            self.prune_graph()

    class Vae(Fixes, VaeOnnxModel):
        def optimize(self, options=None):
            self._optimize(options, None)

    class Clip(Fixes, ClipOnnxModel):
        pass

    return {"unet": Unet, "vae": Vae, "clip": Clip}


def fuse_for_cuda(model, kind: str):
    """``model`` (an fp16 or fp32 onnx ModelProto, consumed) fused for ONNX Runtime CUDA, in its own precision;
    float32 inputs/outputs of an fp16 graph (``timestep``) stay float32.

    ``kind``: "unet", "vae" or "clip" (:data:`COMPONENT_KINDS`).
    """
    require("onnxruntime", extra="export")
    from onnx import TensorProto
    from onnxruntime.transformers.fusion_options import FusionOptions

    classes = _model_classes()
    if kind not in classes:
        raise InputError(f"no ONNX Runtime CUDA fusions for model type {kind!r}", fix=f"use {', '.join(classes)}")
    io = [*model.graph.input, *model.graph.output]
    float32_io = [v.name for v in io if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    half = any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in io)
    lift_to_float32(model)
    optimizer = classes[kind](model, num_heads=0, hidden_size=0)
    optimizer.optimize(FusionOptions(kind))
    if half:
        optimizer.convert_float_to_float16(keep_io_types=float32_io)
    optimizer.topological_sort()
    return optimizer.model


def op_counts(model) -> dict[str, int]:
    """Node count per op type of an onnx ModelProto."""
    return dict(collections.Counter(node.op_type for node in model.graph.node))


@dataclasses.dataclass(frozen=True)
class FusedGraph:
    """One component's fused graph after :func:`build_cuda_graphs`."""

    component: str
    path: Path  # COMPONENT/model-cuda-<key>.onnx
    key: str  # sha256 of (ONNX hash, ONNX Runtime version, FUSION_VERSION)
    cache_hit: bool
    seconds: float  # fusion time (0 for a cache hit)
    fused_ops: dict[str, int]  # count per op of FUSED_OPS in the written graph (empty for a cache hit)


def build_cuda_graphs(directory: str | Path, components: list[str] | None = None) -> list[FusedGraph]:
    """Fuse every component with ONNX Runtime CUDA fusions (:data:`COMPONENT_KINDS`; default: all of them)."""
    onnx = require("onnx", extra="export")
    ort = require("onnxruntime", extra="export")
    manifest = read_manifest(directory)
    if manifest.precision in ("bf16", "int8"):
        raise InputError(f"no ONNX Runtime CUDA fusions for {manifest.precision} graphs (bf16: ONNX Runtime cannot run "
                         "them; int8: made for its CPU kernels)", fix="export with --precision fp16 or fp32")
    names = [n for n in manifest.component_names(components) if n in COMPONENT_KINDS]
    if not names:
        raise InputError(f"no component of this {manifest.family} export has ONNX Runtime CUDA fusions",
                         fix=f"fusions exist for {', '.join(COMPONENT_KINDS)}")
    results = []
    for name in names:
        onnx_path = manifest.verified_onnx(name)
        entry = manifest.component(name)
        payload = {"onnx": entry.sha256, "onnxruntime": ort.__version__, "fusion": FUSION_VERSION}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        path = manifest.root / f"{name}/model-cuda-{key[:16]}.onnx"
        same_key = next((e for e in entry.engines if e.key == key), None)
        recorded = tuple(e for e in entry.engines if e.key != key)
        if same_key is not None and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == same_key.sha256:
            digest = same_key.sha256
            results.append(FusedGraph(name, path, key, cache_hit=True, seconds=0.0, fused_ops={}))
        else:
            start = time.perf_counter()
            fused = fuse_for_cuda(onnx.load(str(onnx_path)), COMPONENT_KINDS[name])
            counts = op_counts(fused)
            if fused.ByteSize() >= PROTOBUF_LIMIT:
                raise InputError(f"{name}: the fused graph is over 2 GB, which genrt writes only as one file",
                                 fix="run this component on ONNX Runtime CUDA without the fusions")
            data = fused.SerializeToString()
            write_bytes_atomic(path, data)
            digest = hashlib.sha256(data).hexdigest()
            results.append(FusedGraph(name, path, key, cache_hit=False, seconds=time.perf_counter() - start,
                                      fused_ops={op: counts[op] for op in FUSED_OPS if op in counts}))
            log.info("%s: fused %s", name, results[-1].fused_ops)
        manifest = replace_component(manifest, dataclasses.replace(entry, engines=recorded + (EngineRecord(
            path=path, key=key, flavour=FLAVOUR, trt_version=ort.__version__, compute_capabilities=(),
            static=False, sha256=digest),)))
    write_manifest(manifest)
    return results
