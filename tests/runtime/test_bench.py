"""`genrt bench`: per-stage table, engine call counts, overhead and the JSON report, on tiny exports."""

import json

import pytest

from genrt.cli import main as genrt
from tests.runtime.tiny.exports import write_tokenizer

STEPS = 3


@pytest.fixture(scope="module")
def ldm_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_ldm")
    tokenizer = write_tokenizer(root / "tokenizer", "clip")
    assert genrt(["export", "ldm", "--config", "tiny", "--random-weights", "--tokenizer", str(tokenizer),
                  "--out", str(root / "export")]) == 0
    return root / "export"


def test_bench_ldm_reports_stages_engines_and_overhead(ldm_export, tmp_path, capsys):
    code = genrt(["bench", str(ldm_export), "--backend", "onnxruntime-cpu", "--prompt", "a cat", "--steps", str(STEPS),
                  "--num-images", "2", "--warmup", "1", "--repeats", "2", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "bench-ldm-tiny-fp32-onnxruntime-cpu.json").read_text())
    assert (tmp_path / "bench-ldm-tiny-fp32-onnxruntime-cpu.png").read_bytes()[:4] == b"\x89PNG"
    rows = {row["stage"]: row for row in report["rows"]}
    # Guidance batches uncond + cond: one U-Net call per step; one text-encoder and one decoder call per run.
    assert rows["[engine] unet"]["calls/run"] == STEPS
    assert rows["[engine] text_encoder"]["calls/run"] == 1
    assert rows["[engine] vae_decoder"]["calls/run"] == 1
    assert "[engine] vae_encoder" not in rows  # unused by text-to-image
    assert {"text_encoder", "denoise", "vae_decoder"} <= set(rows)
    total = report["total"]
    assert total["runs"] == 2 and 0 < total["min_ms"] <= total["median_ms"] <= total["p99_ms"]
    engine_ms = sum(row["median_ms"] for stage, row in rows.items() if stage.startswith("[engine]"))
    assert engine_ms < total["p99_ms"]
    assert 0.0 <= report["runtime_overhead_percent"]["median"] < 100.0
    assert report["batch"] == 2 and report["image_shape"] == [32, 32, 3]
    assert report["images_per_second"] == pytest.approx(2 / (total["median_ms"] / 1e3))
    assert report["environment"]["versions"]["onnxruntime"]
    assert set(report["files"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    assert "| [engine] unet | 3 |" in capsys.readouterr().out


def test_bench_refuses_zero_repeats(ldm_export, tmp_path, capsys):
    assert genrt(["bench", str(ldm_export), "--prompt", "a cat", "--repeats", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--repeats" in err[0]
    assert not any(tmp_path.iterdir())
