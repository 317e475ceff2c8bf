"""benchmarks/cpu_sd15_unet on the tiny ldm U-Net: export in a child process, interleaved timing, parity."""

import json

from benchmarks.cpu_sd15_unet import check_real_config, main


def test_the_sd15_preset_is_the_real_config():
    check_real_config()  # raises SystemExit when the preset and tests/fixtures/sd15/unet/config.json differ


def test_tiny_unet_run(tmp_path):
    assert main(["--config", "tiny", "--resolution", "32", "--batch", "2", "--threads", "1", "--repeats", "2",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cpu-unet-tiny-32.json").read_text())
    rows = {row["backend"]: row for row in report["rows"]}
    assert list(rows) == ["torch-eager-fp32", "torch-eager-bf16", "onnxruntime-cpu-fp32"]
    assert rows["torch-eager-fp32"]["rel_error_vs_fp32"] == 0.0
    assert 0 < rows["onnxruntime-cpu-fp32"]["rel_error_vs_fp32"] < 1e-4
    assert 1e-4 < rows["torch-eager-bf16"]["rel_error_vs_fp32"] < 0.1  # bf16 keeps about 3 significant digits
    assert report["parity"]["onnxruntime-cpu-fp32"]["passed"] and report["batch"] == 2
    for row in rows.values():
        assert row["runs"] == 2 and 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
