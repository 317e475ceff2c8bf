"""benchmarks/compare_backends: interleaved timing, and a smoke run on the tiny VQGAN (every row, ratios, report)."""

import json
import time

import pytest

from benchmarks.compare_backends import main, time_interleaved


def test_time_interleaved_alternates_the_order_and_times_each_contender():
    order = []

    def sleeper(name: str, seconds: float):
        def call():
            order.append(name)
            time.sleep(seconds)
        return call

    spreads = time_interleaved({"fast": sleeper("fast", 0.001), "slow": sleeper("slow", 0.025)},
                               warmup=1, repeats=4, pause_s=0.0)
    assert order == ["fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast", "fast", "slow"]
    assert spreads["fast"].runs == spreads["slow"].runs == 4
    for spread in spreads.values():
        assert spread.p10_ms <= spread.median_ms <= spread.p90_ms
    assert spreads["fast"].median_ms >= 1.0 and spreads["slow"].median_ms >= 25.0
    assert spreads["slow"].median_ms - spreads["fast"].median_ms > 12.0  # sleeps overshoot alike on a loaded host


def test_compare_backends_tiny_vqgan(tmp_path, capsys):
    assert main(["--family", "vqgan", "--config", "tiny", "--warmup", "1", "--repeats", "2", "--device", "cpu",
                 "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "compare-vqgan-tiny-cpu-t1.json").read_text())
    rows = report["rows"]
    backends = {(row["component"], row["threads"], row["backend"]) for row in rows}
    for component in ("encoder", "decoder", "prior"):
        expected = {(component, 1, b) for b in ("torch-eager-fp32", "torch-eager-bf16", "onnxruntime-cpu-fp32")}
        assert expected <= backends
    for row in rows:
        assert row["median_ms"] > 0 and row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] and row["runs"] == 2
        if row["backend"] == "torch-eager-fp32":
            assert row["speedup_vs_eager"] == pytest.approx(1.0)
        assert row["%_of_peak"] is None  # no known peak for a CPU
    # FLOPs are counted once per component: the same number on every backend, > 0 for the conv nets.
    flops = {}
    for row in rows:
        assert flops.setdefault(row["component"], row["gflop"]) == row["gflop"]
    assert flops["encoder"] > 0 and flops["decoder"] > 0
    assert report["environment"]["versions"]["torch"].startswith("2.")
    assert (tmp_path / "compare-vqgan-tiny-cpu-t1.png").is_file()
    assert "| decoder | 1 | onnxruntime-cpu-fp32 |" in (tmp_path / "compare-vqgan-tiny-cpu-t1.md").read_text()
    assert "| decoder | 1 | onnxruntime-cpu-fp32 |" in capsys.readouterr().out
