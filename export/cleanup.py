"""Graph clean-up after export: constant folding, shape inference, dead-node removal.

We use **onnxslim** rather than Polygraphy + onnx-graphsurgeon. Both fold constants and infer
shapes, but onnxslim does the three jobs in one call on a ``ModelProto`` and in pure Python, while
Polygraphy's folding runs the constant subgraphs through ONNX Runtime and needs graphsurgeon
round-trips for dead-node removal. onnxslim also eliminates the Reshape/Transpose/Unsqueeze chains
the TorchScript exporter emits around attention and folds Pad into Conv; all rewrites stay within
standard ONNX ops, so TensorRT and ONNX Runtime parse the result unchanged. Its fusions never change
a graph's input/output names or dtypes (checked by :func:`clean_graph`).

Large graphs: onnxslim's symbolic shape inference copies the whole model several times (the 1.7 GB
float16 SD 1.5 U-Net peaked at 19 GB of RAM). Above ``LARGE_GRAPH_BYTES`` of weights we therefore run
shape inference ourselves on a weightless copy of the graph (:func:`without_weights`, kilobytes) and
let onnxslim fold and fuse with those shapes; this keeps a few more nodes (1-10 % on the tiny models,
mostly shape arithmetic that TensorRT folds itself) but stays near the size of the graph in memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import onnx

from genrt.errors import GenrtError

log = logging.getLogger(__name__)
# Weights (bytes) above which shape inference runs on a weightless copy instead of inside onnxslim.
LARGE_GRAPH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class CleanupReport:
    """Node counts of one graph before and after clean-up."""

    nodes_before: int  # nodes straight out of torch.onnx.export (plus island Casts)
    nodes_after: int  # nodes after folding, shape inference and dead-node removal


def _signature(model: onnx.ModelProto) -> list[tuple[str, int]]:
    values = list(model.graph.input) + list(model.graph.output)
    return [(value.name, value.type.tensor_type.elem_type) for value in values]


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers, from dtypes and dims (protobuf cannot size a tensor of 2 GB or more)."""
    return sum(
        math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in model.graph.initializer
    )


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers keep name, dtype and dims but no data (for shape inference)."""
    graph = model.graph
    initializers = [onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims) for t in graph.initializer]
    light = onnx.helper.make_graph(graph.node, graph.name, graph.input, graph.output, initializers,
                                   value_info=graph.value_info)
    return onnx.helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)


def infer_shapes_lightly(model: onnx.ModelProto) -> None:
    """Replace ``model``'s value_info by shape inference on its weightless copy (in place)."""
    inferred = onnx.shape_inference.infer_shapes(without_weights(model))
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)


def clean_graph(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, CleanupReport]:
    """Fold constants, infer shapes and drop dead nodes of ``model`` (a component called ``name``)."""
    import onnxslim

    before = len(model.graph.node)
    signature = _signature(model)
    if weight_bytes(model) >= LARGE_GRAPH_BYTES:
        infer_shapes_lightly(model)
        cleaned = onnxslim.slim(model, no_shape_infer=True)
        infer_shapes_lightly(cleaned)
    else:
        cleaned = onnxslim.slim(model)
    if _signature(cleaned) != signature:
        raise GenrtError(
            f"graph clean-up changed the inputs/outputs of {name}: {signature} -> {_signature(cleaned)}",
            fix="report this as a bug and attach the exported graph",
        )
    report = CleanupReport(nodes_before=before, nodes_after=len(cleaned.graph.node))
    log.info("%s: %d nodes -> %d after clean-up", name, report.nodes_before, report.nodes_after)
    return cleaned, report
