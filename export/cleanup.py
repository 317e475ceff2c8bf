"""Graph clean-up after export: constant folding, shape inference, dead-node removal.

We use **onnxslim** rather than Polygraphy + onnx-graphsurgeon. Both fold constants and infer
shapes, but onnxslim does the three jobs in one call on a ``ModelProto`` and in pure Python, while
Polygraphy's folding runs the constant subgraphs through ONNX Runtime and needs graphsurgeon
round-trips for dead-node removal. onnxslim also eliminates the Reshape/Transpose/Unsqueeze chains
the TorchScript exporter emits around attention and folds Pad into Conv; all rewrites stay within
standard ONNX ops, so TensorRT and ONNX Runtime parse the result unchanged. Its fusions never change
a graph's input/output names or dtypes (checked by :func:`clean_graph`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

from genrt.errors import GenrtError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanupReport:
    """Node counts of one graph before and after clean-up."""

    nodes_before: int  # nodes straight out of torch.onnx.export (plus island Casts)
    nodes_after: int  # nodes after folding, shape inference and dead-node removal


def _signature(model: onnx.ModelProto) -> list[tuple[str, int]]:
    values = list(model.graph.input) + list(model.graph.output)
    return [(value.name, value.type.tensor_type.elem_type) for value in values]


def clean_graph(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, CleanupReport]:
    """Fold constants, infer shapes and drop dead nodes of ``model`` (a component called ``name``)."""
    import onnxslim

    before = len(model.graph.node)
    signature = _signature(model)
    cleaned = onnxslim.slim(model)
    if _signature(cleaned) != signature:
        raise GenrtError(
            f"graph clean-up changed the inputs/outputs of {name}: {signature} -> {_signature(cleaned)}",
            fix="report this as a bug and attach the exported graph",
        )
    report = CleanupReport(nodes_before=before, nodes_after=len(cleaned.graph.node))
    log.info("%s: %d nodes -> %d after clean-up", name, report.nodes_before, report.nodes_after)
    return cleaned, report
