"""The generic export machinery on small components built from sdk blocks (tests/export/toy.py)."""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from genrt.errors import InputError
from genrt.export.engine import BuildSettings, build_engines
from genrt.export.folder import export_folder
from genrt.export.onnx_export import export_component
from genrt.export.parity import TOLERANCES, check_parity
from genrt.export.spec import SymbolRange
from genrt.manifest import SCHEMA_VERSION, ManifestError, NodeCounts, TensorSpec, read_manifest
from tests.conftest import relative_error
from tests.export.toy import toy_encoder_spec, toy_plan, toy_unet_spec
from tests.raw_manifest import rewrite_manifest


def ort_and_torch(onnx_path, spec, point, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """The output of the graph at ``onnx_path`` on ONNX Runtime CPU and of ``spec``'s module, at the sample inputs of
    ``point`` ("min", "opt", "max" or symbol sizes) drawn with ``seed``."""
    inputs = spec.sample_inputs(point, seed=seed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {t.name: inputs[t.name].to(getattr(torch, t.dtype)).numpy() for t in spec.inputs})
    with torch.no_grad():
        expected = spec.module()(*inputs.values())
    return actual, expected


def both_toys(precision: str):
    """The toy U-Net, then the toy encoder, in ``precision``."""
    return toy_plan(precision, [toy_unet_spec(precision), toy_encoder_spec(precision)])


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def exported(request, tmp_path_factory):
    precision = request.param
    out = tmp_path_factory.mktemp(f"toy-{precision}") / "export"
    plan = both_toys(precision)
    export_folder(plan, out)
    return precision, plan, out


def test_symbol_range_refuses_unordered_and_misaligned_values():
    with pytest.raises(InputError, match="not ordered"):
        SymbolRange(8, 4, 16)
    with pytest.raises(InputError, match="multiple of 8"):
        SymbolRange(8, 12, 16, multiple_of=8)


def test_profile_and_dynamic_axes_follow_the_symbols():
    spec = toy_unet_spec()
    assert spec.profile()["sample"] == {"min": [1, 4, 4, 4], "opt": [2, 4, 8, 12], "max": [3, 4, 16, 16]}
    assert spec.profile()["timestep"] == {"min": [1], "opt": [2], "max": [3]}
    assert spec.dynamic_axes()["sample"] == {0: "B", 2: "h", 3: "w"}
    with pytest.raises(InputError, match="outside the exported range"):
        spec.point_values({"h": 18})


def test_manifest_records_components_islands_and_hashes(exported):
    precision, plan, out = exported
    manifest = read_manifest(out)
    assert manifest.schema_version == SCHEMA_VERSION and manifest.precision == precision
    unet = manifest.components["toy_unet"]
    assert unet.inputs[0] == TensorSpec("sample", "float16" if precision == "fp16" else "float32", ("B", 4, "h", "w"))
    assert unet.inputs[1].dtype == "float32"  # timestep stays float32 in every precision
    expected_islands = ("group_norm", "layer_norm", "softmax") if precision == "fp16" else ()
    assert unet.fp32_islands == expected_islands
    encoder = manifest.components["toy_encoder"]
    assert encoder.outputs[0].dtype == "int32"
    assert encoder.fp32_islands == (("codebook_search",) if precision == "fp16" else ())
    assert isinstance(unet.nodes, NodeCounts) and unet.nodes.cleaned < unet.nodes.exported
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_one_graph_answers_every_shape_in_its_range(exported):
    """min, max and an odd multiple of the down-sampling factor (h=6, w=10) through one ONNX graph."""
    precision, plan, out = exported
    spec = plan.components["toy_unet"]
    for point in ("min", "max", {"B": 3, "h": 6, "w": 10, "T": 7}):
        actual, expected = ort_and_torch(out / "toy_unet/model.onnx", spec, point, seed=5)
        assert actual.shape == tuple(expected.shape)
        assert actual.dtype == (np.float16 if precision == "fp16" else np.float32)
        assert relative_error(actual, expected) < TOLERANCES[precision]


def test_parity_passes_at_three_shapes_and_is_recorded(exported):
    precision, plan, out = exported
    rows = check_parity(read_manifest(out), plan)
    assert {(r.component, r.point) for r in rows} == {(c, p) for c in plan.components for p in ("min", "opt", "max")}
    assert all(r.passed for r in rows), rows
    unet_rel = max(r.rel for r in rows if r.component == "toy_unet")
    assert 0 < unet_rel < TOLERANCES[precision]
    assert [r.rel for r in rows if r.component == "toy_encoder"] == [0.0, 0.0, 0.0]
    parity = read_manifest(out).parity
    assert parity["toy_unet"]["onnxruntime-cpu"].passed is True
    assert parity["toy_unet"]["onnxruntime-cpu"].rel == pytest.approx(unet_rel)


def test_parity_fails_when_the_reference_weights_differ(exported):
    precision, plan, out = exported
    other = both_toys(precision)
    torch.manual_seed(99)
    changed = toy_plan(precision, [toy_unet_spec(precision, seed=7)])
    rows = check_parity(read_manifest(out), changed, components=["toy_unet"])
    assert rows and not any(r.passed for r in rows)
    assert read_manifest(out).parity["toy_unet"]["onnxruntime-cpu"].passed is False
    check_parity(read_manifest(out), other, components=["toy_unet"])  # restore the record for the other tests
    other_precision = {"fp32": "fp16", "fp16": "fp32"}[precision]
    with pytest.raises(InputError, match=f"the plan is for {other_precision} graphs, .* holds {precision} ones"):
        check_parity(read_manifest(out), both_toys(other_precision))


def test_tensorrt_rtx_builds_for_sm86_and_rebuild_is_a_cache_hit(exported):
    precision, plan, out = exported
    settings = BuildSettings(flavour="tensorrt_rtx", compute_capabilities=("8.6",))
    first = build_engines(out, settings)
    assert [r.cache_hit for r in first] == [False, False]
    assert all(r.path.stat().st_size > 0 for r in first)
    second = build_engines(out, settings)
    assert [r.cache_hit for r in second] == [True, True]
    assert [r.key for r in second] == [r.key for r in first]
    engines = read_manifest(out).components["toy_unet"].engines
    assert len(engines) == 1 and engines[0].compute_capabilities == ("8.6",) and not engines[0].static
    assert (out / f"toy_unet/build-{first[0].key[:16]}.log").read_text().strip()
    static = build_engines(out, BuildSettings(static=True), components=["toy_encoder"])
    assert not static[0].cache_hit and static[0].key != first[1].key
    assert len(read_manifest(out).components["toy_encoder"].engines) == 2


def test_corrupted_onnx_and_other_schemas_are_refused(tmp_path):
    plan = toy_plan(specs=[toy_encoder_spec()])
    out = tmp_path / "export"
    export_folder(plan, out)
    (out / "toy_encoder/model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        build_engines(out, BuildSettings())
    for version in (SCHEMA_VERSION - 1, SCHEMA_VERSION + 1):  # build, parity and run share one rule
        rewrite_manifest(out, {"schema_version": version})
        with pytest.raises(ManifestError, match=f"schema_version {version}; .*re-export the model with `genrt export`"):
            read_manifest(out)


def test_export_refuses_non_empty_folder_without_force_and_replaces_with_force(tmp_path):
    plan = toy_plan(specs=[toy_encoder_spec()])
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="not empty"):
        export_folder(plan, out)
    assert (out / "keep.txt").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(InputError, match="unknown vqgan component"):
        export_folder(plan, out, components=["decoder"], force=True)
    export_folder(plan, out, force=True)
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_external_data_goes_to_one_file_beside_the_graph(tmp_path):
    spec = toy_unet_spec("fp16")
    result = export_component(spec, "fp16", tmp_path / "unet", external_data_bytes=1)
    assert result.external_data == tmp_path / "unet/model.onnx.data"
    assert sorted(p.name for p in (tmp_path / "unet").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert result.external_data.stat().st_size > result.onnx.stat().st_size
    onnx.checker.check_model(str(result.onnx))
    actual, expected = ort_and_torch(result.onnx, spec, "opt", seed=3)
    assert relative_error(actual, expected) < TOLERANCES["fp16"]


def test_large_graph_path_infers_shapes_on_a_weightless_copy(tmp_path, monkeypatch):
    """Above LARGE_GRAPH_BYTES onnxslim skips its own shape inference; the graph stays correct and annotated."""
    import genrt.export.cleanup as cleanup

    monkeypatch.setattr(cleanup, "LARGE_GRAPH_BYTES", 1)
    spec = toy_unet_spec("fp16")
    result = export_component(spec, "fp16", tmp_path / "unet")
    assert result.cleanup.nodes_after < result.cleanup.nodes_before
    model = onnx.load(str(result.onnx))
    assert len(model.graph.value_info) > 0.5 * len(model.graph.node)
    assert sum(len(t.raw_data) for t in model.graph.initializer) > 0  # weights survive the weightless inference
    actual, expected = ort_and_torch(result.onnx, spec, "max", seed=4)
    assert relative_error(actual, expected) < TOLERANCES["fp16"]
