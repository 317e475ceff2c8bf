"""benchmarks/cpu_sd15_unet on the tiny ldm U-Net: export in a child process, interleaved timing per thread
count, parity, the ratio to the best PyTorch option."""

import json
import os

import pytest

from benchmarks.cpu_sd15_unet import check_real_config, main
from genrt.export.parity import TOLERANCES


def test_the_sd15_preset_is_the_real_config():
    check_real_config()  # raises SystemExit when the preset and tests/fixtures/sd15/unet/config.json differ


def _run(tmp_path, threads: str, *flags: str) -> dict:
    assert main(["--config", "tiny", "--resolution", "32", "--batch", "2", "--repeats", "2", "--threads",
                 *threads.split("-"), *flags, "--out", str(tmp_path)]) == 0
    return json.loads((tmp_path / f"cpu-unet-tiny-32-t{threads}.json").read_text())


def test_tiny_unet_run_at_1_and_2_threads(tmp_path):
    report = _run(tmp_path, "1-2", "--no-compile", "--export-dir", str(tmp_path / "export"))
    assert report["threads"] == [1, 2] and report["batch"] == 2 and len(report["load_average_at_start"]) == 3
    assert report["child_peak_host_memory_mb"]["torch-eager-bf16"] > 0  # eager bf16 ran in its own process
    for count in (1, 2):
        rows = {row["backend"]: row for row in report["rows"] if row["threads"] == count}
        assert list(rows) == ["torch-eager-fp32", "torch-eager-bf16", "onnxruntime-cpu-fp32", "onnxruntime-cpu-int8"]
        assert rows["torch-eager-fp32"]["rel_error_vs_fp32"] == 0.0
        assert 0 < rows["onnxruntime-cpu-fp32"]["rel_error_vs_fp32"] < 1e-4
        assert 1e-4 < rows["torch-eager-bf16"]["rel_error_vs_fp32"] < 0.1  # bf16 keeps about 3 significant digits
        assert 1e-3 < rows["onnxruntime-cpu-int8"]["rel_error_vs_fp32"] < TOLERANCES["int8"]  # quantised, in bound
        assert report["parity"][f"onnxruntime-cpu-fp32 t{count}"]["passed"]
        assert report["parity"][f"onnxruntime-cpu-int8 t{count}"]["bound"] == TOLERANCES["int8"]
        best = min((row for name, row in rows.items() if not name.startswith("onnxruntime")),
                   key=lambda r: r["median_ms"])
        versus = report["ort_vs_best_torch"][str(count)]
        assert versus["best_torch"] == best["backend"]
        for graph in ("onnxruntime-cpu-fp32", "onnxruntime-cpu-int8"):
            assert versus[f"{graph}_vs_best_torch"] == best["median_ms"] / rows[graph]["median_ms"]
        for row in rows.values():
            assert row["runs"] == 2 and 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    # the graphs stay for a later run, which reuses them instead of exporting again
    graphs = [tmp_path / "export" / "unet" / "model.onnx", tmp_path / "export" / "unet-int8" / "model.onnx"]
    written = [path.stat().st_mtime_ns for path in graphs]
    _run(tmp_path, "1", "--no-compile", "--export-dir", str(tmp_path / "export"))
    assert [path.stat().st_mtime_ns for path in graphs] == written


@pytest.mark.slow
def test_tiny_unet_run_with_torch_compile(tmp_path):
    report = _run(tmp_path, "1")
    rows = {row["backend"]: row for row in report["rows"]}
    assert list(rows) == ["torch-eager-fp32", "torch-eager-bf16", "torch-compile-fp32", "onnxruntime-cpu-fp32",
                          "onnxruntime-cpu-int8"]
    assert rows["torch-compile-fp32"]["rel_error_vs_fp32"] < 1e-4


@pytest.mark.skipif(not os.environ.get("GENRT_OPENVINO_PYTHON"), reason="GENRT_OPENVINO_PYTHON unset (make openvino-env)")
def test_tiny_unet_run_with_the_int8_graph_on_openvino(tmp_path):
    report = _run(tmp_path, "1", "--no-compile", "--no-bf16", "--openvino-python", os.environ["GENRT_OPENVINO_PYTHON"])
    rows = {row["backend"]: row for row in report["rows"]}
    assert list(rows) == ["torch-eager-fp32", "onnxruntime-openvino-int8", "onnxruntime-cpu-fp32",
                          "onnxruntime-cpu-int8"]
    # the same int8 graph on two providers: both quantised (not float32), both in int8's bound
    assert 1e-3 < rows["onnxruntime-openvino-int8"]["rel_error_vs_fp32"] < TOLERANCES["int8"]
    assert report["parity"]["onnxruntime-openvino-int8 t1"]["passed"]
    assert report["child_peak_host_memory_mb"]["onnxruntime-openvino-int8"] > 0
    assert "onnxruntime-openvino-int8_vs_best_torch" in report["ort_vs_best_torch"]["1"]
