"""Smoke test of benchmarks/compare_backends on the tiny VQGAN: every backend row, ratios and the report."""

import json

import pytest

from benchmarks.compare_backends import main


def test_compare_backends_tiny_vqgan(tmp_path, capsys):
    assert main(["--family", "vqgan", "--config", "tiny", "--warmup", "1", "--repeats", "2", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "compare-vqgan-tiny-cpu.json").read_text())
    rows = report["rows"]
    backends = {(row["component"], row["backend"]) for row in rows}
    for component in ("encoder", "decoder", "prior"):
        assert {(component, b) for b in ("torch-eager-fp32", "torch-eager-bf16", "onnxruntime-cpu-fp32")} <= backends
    for row in rows:
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"]
        if row["backend"] == "torch-eager-fp32":
            assert row["speedup_vs_eager"] == pytest.approx(1.0)
        assert row["%_of_peak"] is None  # no known peak for a CPU
    # FLOPs are counted once per component: the same number on every backend, > 0 for the conv nets.
    flops = {}
    for row in rows:
        assert flops.setdefault(row["component"], row["gflop"]) == row["gflop"]
    assert flops["encoder"] > 0 and flops["decoder"] > 0
    assert report["environment"]["versions"]["torch"].startswith("2.")
    assert (tmp_path / "compare-vqgan-tiny-cpu.png").is_file()
    assert "| decoder | onnxruntime-cpu-fp32 |" in capsys.readouterr().out
