"""Smoke test of benchmarks/pipeline on the tiny Stable Diffusion, CPU, 2 steps: every backend, stage rows,
ratios to eager float32, overhead and the stamped report."""

import json

import pytest

from benchmarks.pipeline import main
from genrt.errors import InputError


def test_pipeline_bench_tiny_ldm(tmp_path, capsys):
    assert main(["--family", "ldm", "--config", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1",
                 "--repeats", "2", "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "pipeline-ldm-tiny-cpu-t1.json").read_text())
    assert report["threads"] == 1 and len(report["load_average_at_start"]) == 3  # torch and ONNX Runtime alike
    assert report["workload"] == {"family": "ldm", "config": "tiny", "batch": 1, "resolution": 32, "steps": 2,
                                  "stages": 1, "seed": 0}
    backends = report["backends"]
    assert list(backends) == ["torch-eager-fp32", "torch-eager-bf16", "onnxruntime-cpu"]
    assert [backends[b]["precision"] for b in backends] == ["fp32", "bf16", "fp32"]
    assert backends["torch-eager-fp32"]["speedup_vs_eager_fp32"] == pytest.approx(1.0)
    assert backends["torch-eager-bf16"]["speedup_vs_eager_half"] == pytest.approx(1.0)
    rows = {(row["backend"], row["stage"]): row for row in report["rows"]}
    for backend in backends:
        total = rows[(backend, "pipeline total")]
        assert total["median_ms"] == pytest.approx(backends[backend]["total"]["median_ms"])
        assert total["speedup_vs_eager_fp32"] == pytest.approx(backends[backend]["speedup_vs_eager_fp32"])
        assert total["speedup_vs_eager_half"] == pytest.approx(backends[backend]["speedup_vs_eager_half"])
        assert 0.0 <= backends[backend]["overhead_percent"]["median"] < 100.0
        # per-component rows: U-Net x steps, text encoder and VAE decoder once per call
        for component, calls in (("text_encoder", 1), ("unet", 2), ("vae_decoder", 1)):
            row = rows[(backend, f"[engine] {component}")]
            assert row["calls/run"] == calls
            assert 0.0 < row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] < total["p99_ms"]
            assert row["speedup_vs_eager_fp32"] > 0
            if backend == "torch-eager-fp32":
                assert row["speedup_vs_eager_fp32"] == pytest.approx(1.0)
    # the runtime's own stages, and its report (file sizes, overhead) kept per backend
    for stage in ("tokenize", "text_encoder", "denoise", "vae_decoder"):
        assert rows[("onnxruntime-cpu", stage)]["median_ms"] > 0
    runtime = report["runtime_reports"]["onnxruntime-cpu"]
    assert runtime["precision"] == "fp32" and runtime["image_shape"] == [32, 32, 3]
    assert set(runtime["files"]) == {"text_encoder", "unet", "vae_decoder"}
    environment = report["environment"]
    assert environment["versions"]["torch"].startswith("2.") and environment["date"][:2] == "20"
    assert report["device"] == "cpu" and report["repeats"] == 2 and report["warmup"] == 1
    assert (tmp_path / "pipeline-ldm-tiny-cpu-t1.png").is_file()
    out = capsys.readouterr().out
    assert "| onnxruntime-cpu | [engine] unet | 2 |" in out and "| torch-eager-bf16 | pipeline total |" in out


@pytest.mark.parametrize("argv, message", [
    (["--family", "vqgan", "--steps", "4"], "--steps does not apply to vqgan"),
    (["--family", "ldm", "--stages", "1"], "--stages applies to the imagen cascade"),
    (["--family", "imagen", "--stages", "4"], "--stages 4"),
    (["--family", "imagen", "--resolution", "64"], "fixed resolutions"),
])
def test_pipeline_bench_refuses_bad_arguments(argv, message, tmp_path):
    with pytest.raises(InputError, match=message):
        main(argv + ["--device", "cpu", "--out", str(tmp_path)])


def test_onnxruntime_cuda_runs_plain_and_with_cuda_graphs_then_fused_after_the_fusion_build(monkeypatch, tmp_path):
    import genrt.export.cuda_fusion as cuda_fusion
    from benchmarks.pipeline import runtime_variants

    built = []
    monkeypatch.setattr(cuda_fusion, "build_cuda_graphs", lambda directory, components: built.append(components))
    variants = runtime_variants(["onnxruntime-cuda", "tensorrt"], tmp_path, ["text_encoder", "unet", "vae_decoder"],
                                fusions=True)
    assert next(variants) == ("onnxruntime-cuda", "onnxruntime-cuda", False)
    assert next(variants) == ("onnxruntime-cuda+graphs", "onnxruntime-cuda", True)
    assert built == []  # the plain rows run before the fused graphs exist
    assert list(variants) == [("onnxruntime-cuda+fused", "onnxruntime-cuda", False),
                              ("onnxruntime-cuda+fused+graphs", "onnxruntime-cuda", True),
                              ("tensorrt", "tensorrt", True)]
    assert built == [["text_encoder", "unet", "vae_decoder"]]
    assert list(runtime_variants(["onnxruntime-cpu"], tmp_path, ["unet"], fusions=True)) == [
        ("onnxruntime-cpu", "onnxruntime-cpu", True)]


def test_contenders_are_interleaved_call_by_call_in_abba_rounds():
    from benchmarks.pipeline import interleave

    order = []

    def contender(name: str, calls: int):
        yield  # opened
        for index in range(calls):
            order.append(name)
            if index < calls - 1:
                yield
        return {"total": {"median_ms": float(calls)}}

    contenders = {"a": contender("a", 3), "b": contender("b", 3)}
    for calls in contenders.values():
        next(calls)
    reports = interleave(contenders, pause_s=0.0)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert reports == {"a": {"total": {"median_ms": 3.0}}, "b": {"total": {"median_ms": 3.0}}}
