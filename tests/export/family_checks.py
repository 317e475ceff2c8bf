"""Checks every family's export must pass: contract I/O, parity at three shapes, engines, cache hits.

Each ``tests/export/test_<family>.py`` exports the family's tiny config once per precision (a
module-scoped fixture returning :class:`Exported`) and calls these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from genrt.export.engine import BuildSettings, build_engines
from genrt.export.folder import FamilyExport, export_folder
from genrt.export.parity import check_parity, compare
from genrt.manifest import read_manifest


@dataclass(frozen=True)
class Exported:
    precision: str  # "fp32" or "fp16"
    plan: FamilyExport  # the specs the folder was exported from
    out: Path  # the export folder


def export_once(plan: FamilyExport, tmp_path_factory) -> Exported:
    out = tmp_path_factory.mktemp(f"{plan.family}-{plan.precision}") / "export"
    export_folder(plan, out)
    return Exported(plan.precision, plan, out)


def check_contract(exported: Exported, contract: dict[str, tuple[list[str], list[str]]]) -> None:
    """The manifest lists exactly the contract's components with its input and output names and dtypes."""
    manifest = read_manifest(exported.out)
    assert manifest.precision == exported.precision
    assert list(manifest.components) == list(contract)
    for name, (inputs, outputs) in contract.items():
        entry = manifest.components[name]
        assert [t.name for t in entry.inputs] == inputs, name
        assert [t.name for t in entry.outputs] == outputs, name
        session = ort.InferenceSession(str(entry.onnx), providers=["CPUExecutionProvider"])
        graph_types = {v.name: v.type for v in session.get_inputs() + session.get_outputs()}
        for tensor in entry.inputs + entry.outputs:
            expected = {"float32": "tensor(float)", "float16": "tensor(float16)", "int32": "tensor(int32)"}
            assert graph_types[tensor.name] == expected[tensor.dtype], (name, tensor)
        if exported.precision == "fp32":
            assert entry.fp32_islands == (), name


def check_parity_at_three_shapes(exported: Exported) -> list:
    """ORT CPU against float32 PyTorch at min/opt/max of every component, within the precision's bound."""
    rows = check_parity(read_manifest(exported.out), exported.plan)
    names = set(exported.plan.components)
    assert {(r.component, r.point) for r in rows} == {(c, p) for c in names for p in ("min", "opt", "max")}
    failed = [r for r in rows if not r.passed]
    assert not failed, failed
    parity = read_manifest(exported.out).parity
    assert all(parity[name]["onnxruntime-cpu"].passed for name in names)
    return rows


def check_odd_shape(exported: Exported, component: str, point: dict[str, int]) -> None:
    """One exported graph answers a shape inside its range that is an odd multiple of the model's factor."""
    spec = exported.plan.components[component]
    inputs = spec.sample_inputs(point, seed=11)
    with torch.no_grad():
        expected = spec.module()(*(inputs[t.name] for t in spec.inputs))
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    session = ort.InferenceSession(str(exported.out / component / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {t.name: inputs[t.name].to(getattr(torch, t.dtype)).numpy() for t in spec.inputs}
    actual = dict(zip([t.name for t in spec.outputs], session.run([t.name for t in spec.outputs], feeds)))
    reference = {t.name: value for t, value in zip(spec.outputs, expected)}
    for tensor in spec.outputs:
        assert actual[tensor.name].shape == tuple(reference[tensor.name].shape), tensor.name
        assert actual[tensor.name].dtype == np.dtype(tensor.dtype), tensor.name
    rows = compare(spec, inputs, reference, actual, exported.precision)
    assert all(passed for *_, passed in rows), rows


def check_rtx_build_and_cache_hit(exported: Exported) -> None:
    """TensorRT-RTX engines for SM86 for every component; the second build is a cache hit everywhere."""
    settings = BuildSettings(flavour="tensorrt_rtx", compute_capabilities=("8.6",))
    first = build_engines(exported.out, settings)
    names = list(exported.plan.components)
    assert [r.component for r in first] == names
    assert not any(r.cache_hit for r in first)
    assert all(r.path.is_file() and r.path.stat().st_size > 1000 for r in first)
    second = build_engines(exported.out, settings)
    assert all(r.cache_hit for r in second) and [r.key for r in second] == [r.key for r in first]
    manifest = read_manifest(exported.out)
    for name in names:
        (engine,) = manifest.components[name].engines
        assert engine.flavour == "tensorrt_rtx" and engine.compute_capabilities == ("8.6",)
        assert engine.path.is_file()
