"""Min/max ranges of chosen tensors of an ONNX graph, gathered one sample at a time in bounded memory.

The graph is run once per sample with a ``ReduceMin`` and a ``ReduceMax`` (to scalars) beside each chosen tensor,
placed right after the node that makes it, and only those scalars as extra outputs; the ranges are folded into a
running min/max after each call. What the session holds is the plain inference's working set: no intermediate
tensor is returned, none outlives its consumers, and nothing grows with the number of samples.

ONNX Runtime's own calibrator (``quantize_static``) reduces every input and output of every node of the quantised
op types, attention's (B*heads, N, N) score MatMuls included, and its session keeps them alive to the end of the
call: on the tiny ldm U-Net at 256 px it was killed at 20 GB where a plain call peaks at 2.6 GB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from genrt.errors import GenrtError, require
from genrt.fileio import temporary_file

MIN_SUFFIX, MAX_SUFFIX = "/genrt_calibration_min", "/genrt_calibration_max"


def tensor_ranges(graph: Path, tensors: Sequence[str], samples: Iterable[dict[str, np.ndarray]],
                  threads: int = 0) -> dict[str, tuple[float, float]]:
    """(min, max) over every sample of each tensor of ``tensors`` (float32 activations or inputs of the graph at
    ``graph``; weights beside it stay where they are); ``samples``: feeds by input name, one call each;
    ``threads``: ONNX Runtime intra-op threads (0: its default)."""
    ort = require("onnxruntime", extra="cpu")
    model = onnx.load(str(graph), load_external_data=False)  # external weights are read by the session, from beside
    _add_reductions(model, tensors)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Memory over speed (tiny ldm U-Net, batch 2, 256 px, one thread, second call): the default order runs the
    # reductions at the end of the call, keeping every chosen tensor alive (4.9 GB); run as soon as their input
    # exists, but with the arena and the memory pattern, 4.7-7.0 GB; without either, 2.7 GB (a plain call's
    # working set), at 13 s a call instead of 6.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    # the augmented graph lives beside the original only while the session opens: its weights paths are relative
    with temporary_file(graph) as augmented:
        onnx.save_model(model, str(augmented))
        del model
        session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    names = [name + suffix for name in tensors for suffix in (MIN_SUFFIX, MAX_SUFFIX)]
    lowest = np.full(len(tensors), np.inf)
    highest = np.full(len(tensors), -np.inf)
    calls = 0
    for feeds in samples:
        values = np.array(session.run(names, feeds), dtype=np.float64).reshape(len(tensors), 2)
        np.minimum(lowest, values[:, 0], out=lowest)
        np.maximum(highest, values[:, 1], out=highest)
        calls += 1
    if calls == 0:
        raise GenrtError(f"no calibration sample for {graph}", fix="pass at least one feed dict")
    return {name: (float(low), float(high)) for name, low, high in zip(tensors, lowest, highest)}


def _add_reductions(model: onnx.ModelProto, tensors: Sequence[str]) -> None:
    """Give ``model`` a scalar ReduceMin and ReduceMax output of each of ``tensors``, each placed right after the
    tensor's producer (graph inputs: first), so the node order stays topological and the reductions run early."""
    graph = model.graph
    wanted = set(tensors)
    made = {name for name in (i.name for i in graph.input)} | {o for node in graph.node for o in node.output}
    missing = sorted(wanted - made)
    if missing:
        raise GenrtError(f"{len(missing)} tensors to calibrate are not made by the graph: {', '.join(missing[:5])}",
                         fix="calibrate graph inputs or node outputs (weights need no calibration)")

    def reductions(names: Iterable[str]) -> list[onnx.NodeProto]:
        return [helper.make_node(op, [name], [name + suffix], keepdims=0, name=name + suffix)
                for name in names if name in wanted for op, suffix in (("ReduceMin", MIN_SUFFIX), ("ReduceMax", MAX_SUFFIX))]

    nodes = reductions(i.name for i in graph.input)
    for node in graph.node:
        nodes.append(node)
        nodes += reductions(node.output)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output.extend(helper.make_tensor_value_info(name + suffix, onnx.TensorProto.FLOAT, [])
                        for name in tensors for suffix in (MIN_SUFFIX, MAX_SUFFIX))
