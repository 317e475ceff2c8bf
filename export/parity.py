"""Parity: every exported component against its float32 PyTorch reference, on every backend here.

For each component and each shape point (min, opt, max) the reference runs the float32 module built
from the same weights on fresh random inputs; each backend (ONNX Runtime CPU always, TensorRT where
a GPU and engines exist) runs the exported graph through the runtime's runners on the same inputs,
cast to the graph's dtypes. Float outputs are compared by max-abs and relative error
(max |a - e| / max |e|) against the precision's bound; integer outputs (codebook indices) must be
identical except where the spec says the reference has a near tie. Results go into the manifest's
``parity`` and come back as rows for a table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from genrt.errors import InputError
from genrt.families import family
from genrt.export.folder import FamilyExport
from genrt.export.spec import POINTS, ComponentSpec
from genrt.manifest import Manifest, ParityPoint, ParityRecord, write_manifest

# Relative-error bound of each export precision against float32 PyTorch; under an int8 export each component
# meets its own precision's (Family.component_precision: the quantised ones int8, the others fp32). int8 (W8A8,
# about 2 significant digits per layer, compounded through the U-Net): the tiny ldm U-Net measured 4-8% at the
# min and opt points and 11-14% at max (three weight seeds; max's larger tensors reach past the calibrated
# ranges and clip); 0.2 leaves 1.5x over the worst.
TOLERANCES = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2, "int8": 0.2}
# Precisions a backend cannot run (ONNX Runtime's CPU kernels have no bfloat16 Conv/MatMul).
UNSUPPORTED = {"onnxruntime-cpu": ("bf16",), "onnxruntime-cuda": ("bf16",), "tensorrt": ()}


@dataclass(frozen=True)
class ParityRow:
    """One (component, backend, shape point, output) comparison."""

    component: str  # component name
    backend: str  # "onnxruntime-cpu" or "tensorrt"
    point: str  # "min", "opt" or "max"
    output: str  # output tensor name
    max_abs: float  # max |backend - reference|; for indices the fraction of differing entries
    rel: float  # max_abs / max |reference|; for indices the fraction of differences outside ties
    tolerance: float  # bound rel had to stay under (0 for indices: every difference must be a tie)
    passed: bool


def _to_numpy(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import ml_dtypes

        return tensor.float().numpy().astype(ml_dtypes.bfloat16)
    return tensor.to(getattr(torch, dtype)).numpy()


def compare(spec: ComponentSpec, inputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
            actual: dict[str, np.ndarray], precision: str) -> list[tuple[str, float, float, float, bool]]:
    """(output, max_abs, rel, tolerance, passed) of each output of one run."""
    rows = []
    ties = spec.near_ties(inputs) if spec.near_ties is not None else {}
    for out in spec.outputs:
        expected = reference[out.name].detach().double().numpy()
        got = np.asarray(actual[out.name]).astype(np.float64)
        if got.shape != expected.shape:
            rows.append((out.name, float("inf"), float("inf"), 0.0, False))
        elif out.is_float:
            max_abs = float(np.abs(got - expected).max()) if got.size else 0.0
            rel = max_abs / max(float(np.abs(expected).max()) if got.size else 0.0, 1e-12)
            tolerance = TOLERANCES[precision] + spec.extra_tolerance
            rows.append((out.name, max_abs, rel, tolerance, bool(rel < tolerance)))
        else:
            differ = got != expected
            allowed = ties[out.name].numpy() if out.name in ties and precision != "fp32" else np.zeros_like(differ)
            unexplained = float((differ & ~allowed).mean()) if differ.size else 0.0
            rows.append((out.name, float(differ.mean()) if differ.size else 0.0, unexplained, 0.0, unexplained == 0.0))
    return rows


def available_backends(manifest: Manifest) -> list[str]:
    """ONNX Runtime CPU; on a GPU also ONNX Runtime CUDA (onnxruntime-gpu) and TensorRT (every component
    has a TensorRT engine)."""
    from genrt.runtime.backends.onnxruntime import cuda_available

    backends = ["onnxruntime-cpu"]
    if torch.cuda.is_available() and cuda_available():
        backends.append("onnxruntime-cuda")
    if torch.cuda.is_available() and all(entry.tensorrt_engines for entry in manifest.components.values()):
        from genrt.runtime.backends.tensorrt import available_flavours

        if available_flavours():
            backends.append("tensorrt")
    return backends


def check_parity(manifest: Manifest, plan: FamilyExport, components: list[str] | None = None,
                 seed: int = 1234, backends: list[str] | None = None) -> list[ParityRow]:
    """Compare the components of the export folder ``manifest`` describes with ``plan``'s PyTorch modules;
    records the results in its manifest.json."""
    from genrt.runtime.backends import Runners

    precision = manifest.precision
    if plan.precision != precision:
        raise InputError(f"the plan is for {plan.precision} graphs, {manifest.root} holds {precision} ones",
                         fix=f"check the folder against a {precision} plan (genrt parity rebuilds it from the folder)")
    names = manifest.component_names(components)
    for name in names:
        manifest.verified_onnx(name)
    rows: list[ParityRow] = []
    for backend in backends or available_backends(manifest):
        if precision in UNSUPPORTED[backend]:
            continue
        with Runners(manifest, names, backend=backend, threads=1) as runners:
            for name in names:
                spec = plan.components[name]
                reference_module = spec.module().float().eval()
                for index, point in enumerate(POINTS):
                    inputs = spec.sample_inputs(point, seed=seed + index)
                    with torch.no_grad():
                        outputs = reference_module(*(inputs[t.name] for t in spec.inputs))
                    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
                    reference = {t.name: value for t, value in zip(spec.outputs, outputs)}
                    feeds = {t.name: _to_numpy(inputs[t.name], t.dtype) for t in spec.inputs}
                    actual = runners[name].infer(feeds)
                    checked = family(manifest.family).component_precision(precision, name)
                    for output, max_abs, rel, tolerance, passed in compare(spec, inputs, reference, actual, checked):
                        rows.append(ParityRow(name, backend, point, output, max_abs, rel, tolerance, passed))
    write_manifest(dataclasses.replace(manifest, parity={**manifest.parity, **records(rows)}))
    return rows


def records(rows: list[ParityRow]) -> dict[str, dict[str, ParityRecord]]:
    """component -> backend -> the worst max_abs/rel over points and outputs, passed = all passed."""
    grouped: dict[str, dict[str, list[ParityRow]]] = {}
    for row in rows:
        grouped.setdefault(row.component, {}).setdefault(row.backend, []).append(row)
    return {
        component: {
            backend: ParityRecord(
                max_abs=max(row.max_abs for row in group),
                rel=max(row.rel for row in group),
                tolerance=group[0].tolerance,
                passed=all(row.passed for row in group),
                points={f"{row.point}/{row.output}": ParityPoint(row.max_abs, row.rel, row.passed) for row in group},
            )
            for backend, group in backends.items()
        }
        for component, backends in grouped.items()
    }


def format_table(rows: list[ParityRow]) -> str:
    """A fixed-width table of the rows, one line each, with PASS/FAIL."""
    header = f"{'component':<16}{'backend':<18}{'point':<6}{'output':<20}{'max_abs':>12}{'rel':>12}{'bound':>10}  result"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.component:<16}{r.backend:<18}{r.point:<6}{r.output:<20}{r.max_abs:>12.3e}{r.rel:>12.3e}"
                     f"{r.tolerance:>10.0e}  {'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)
