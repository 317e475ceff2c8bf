"""Export one component to a dynamic-shape, strongly typed ONNX graph.

Steps: cast the wrapper module to the precision while keeping float32 islands
(:mod:`genrt.export.precision`) -> ``torch.onnx.export`` with the TorchScript exporter
(``dynamo=False``) and ``dynamic_axes`` from the spec -> Casts around graph-level islands ->
clean-up (:mod:`genrt.export.cleanup`) -> ``COMPONENT/model.onnx``, with the weights in one
``model.onnx.data`` file beside it when the model is too big for a single protobuf (2 GB). An ``int8``
component is exported in float32 and then statically quantised (:mod:`genrt.export.quantize`), its activation
ranges calibrated on the spec's own sample inputs (:data:`CALIBRATION`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from genrt.errors import GenrtError
from genrt.export.cleanup import CleanupReport, clean_graph
from genrt.export.precision import DEFAULT_FP32_MODULES, cast_with_islands, keep_ops_in_float32
from genrt.export.quantize import FLOAT32_ISLANDS, quantize_int8
from genrt.export.spec import DTYPES, PRECISIONS, ComponentSpec

# Lowest opset: 17 has LayerNormalization, which TensorRT and ONNX Runtime both fuse.
OPSET = 17
# (shape point, seed) of the sample inputs an int8 component is calibrated on, one call each: the opt point (the
# shapes the profile is tuned for) and the min one; not max, whose activations a real-size U-Net cannot hold on a
# CPU host (SD 1.5 at 1024 px, batch 4: 34 GB of attention scores). Seeds apart from parity's (1234...).
CALIBRATION = (("min", 1), ("opt", 2), ("opt", 3), ("opt", 4))
# Weights larger than this go to external data (protobuf refuses messages of 2 GiB and more).
EXTERNAL_DATA_BYTES = 2**31 - 2**26
ONNX_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx.data"


@dataclass(frozen=True)
class ExportedComponent:
    """What :func:`export_component` wrote for one component."""

    onnx: Path  # the graph file
    external_data: Path | None  # the weights file beside it, or None when the weights are inline
    fp32_islands: tuple[str, ...]  # islands actually kept (module and graph level), sorted
    cleanup: CleanupReport  # node counts before/after clean-up


def _parameter_bytes(module: torch.nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _torch_export(spec: ComponentSpec, precision: str, path: Path, opset: int) -> tuple[list[str], int]:
    """torch.onnx.export of ``spec``'s module cast to ``precision``; returns (module islands, weight bytes)."""
    islands = DEFAULT_FP32_MODULES | dict(spec.fp32_modules)
    with torch.no_grad():
        module, module_islands = cast_with_islands(spec.module().eval(), PRECISIONS[precision], islands)
        example = spec.sample_inputs("opt", seed=0)
        args = tuple(example[t.name].to(DTYPES[t.dtype]) for t in spec.inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python control flow
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_axes=spec.dynamic_axes(),
                do_constant_folding=True,
            )
    return module_islands, _parameter_bytes(module)


def export_component(
    spec: ComponentSpec,
    precision: str,
    out_dir: str | Path,
    *,
    opset: int = OPSET,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
) -> ExportedComponent:
    """Export ``spec`` in ``precision`` into ``out_dir`` (created); returns the written paths.

    ``precision``: a key of PRECISIONS; "int8" quantises the float32 graph. ``external_data_bytes``: weights of at
    least this many bytes go to ``model.onnx.data``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-", dir=out_dir) as scratch:
        raw_path = Path(scratch) / ONNX_FILE
        # the half-precision copy of the module lives only inside this call: freed before the ONNX work
        module_islands, weight_bytes = _torch_export(spec, precision, raw_path, opset)
        model = onnx.load(str(raw_path), load_external_data=False)
        half = PRECISIONS[precision] != torch.float32
        graph_islands = keep_ops_in_float32(model, spec.fp32_ops) if half else []
        onnx.external_data_helper.load_external_data_for_model(model, scratch)
    _check_signature(model, spec)
    model, report = clean_graph(model, spec.name)
    onnx_path = out_dir / ONNX_FILE
    external = weight_bytes >= external_data_bytes
    if external:
        onnx.save_model(
            model, str(onnx_path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE, size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(onnx_path))
    del model  # the checker reads the file; do not hold two copies of a multi-GB graph
    if precision == "int8":
        _quantize_in_place(spec, onnx_path, external)
        graph_islands = list(FLOAT32_ISLANDS)
    onnx.checker.check_model(str(onnx_path))  # by path: works with external data
    return ExportedComponent(
        onnx=onnx_path,
        external_data=out_dir / EXTERNAL_DATA_FILE if external else None,
        fp32_islands=tuple(sorted(set(module_islands) | set(graph_islands))),
        cleanup=report,
    )


def _quantize_in_place(spec: ComponentSpec, onnx_path: Path, external: bool) -> None:
    """Replace the float32 graph at ``onnx_path`` (weights beside it when ``external``) by its int8 graph."""
    def calibration():
        for point, seed in CALIBRATION:
            sample = spec.sample_inputs(point, seed=seed)
            yield {t.name: sample[t.name].to(DTYPES[t.dtype]).numpy() for t in spec.inputs}

    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-int8-", dir=onnx_path.parent) as scratch:
        quantized = quantize_int8(onnx_path, Path(scratch) / ONNX_FILE, calibration(), external_data=external)
        if external:  # the quantizer names the weights file after the graph: model.onnx.data, as the float one
            os.replace(quantized.with_name(EXTERNAL_DATA_FILE), onnx_path.with_name(EXTERNAL_DATA_FILE))
        os.replace(quantized, onnx_path)


ONNX_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


def _check_signature(model: onnx.ModelProto, spec: ComponentSpec) -> None:
    """The exported graph's input/output names and dtypes must be the spec's (the runtime's contract)."""
    expected = [(t.name, t.dtype) for t in spec.inputs + spec.outputs]
    actual = [
        (value.name, ONNX_DTYPE_NAMES.get(value.type.tensor_type.elem_type, "unsupported"))
        for value in list(model.graph.input) + list(model.graph.output)
    ]
    if actual != expected:
        raise GenrtError(
            f"exported {spec.name} has inputs/outputs {actual}, the contract says {expected}",
            fix="make the component wrapper use every input and cast inputs/outputs to the dtypes of its spec",
        )
