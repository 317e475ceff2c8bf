"""benchmarks/cpu_session_options: every variant is timed against ORT's defaults on a tiny component."""

import json

from benchmarks.cpu_session_options import main


def test_session_options_on_the_tiny_vqgan_prior(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmarks.cpu_session_options.COMPONENTS", {"vqgan": ("prior",)})
    assert main(["--families", "vqgan", "--threads", "1", "--warmup", "1", "--repeats", "3",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cpu-session-options.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["default", "no-spinning", "level-extended", "no-arena"]
    assert {row["component"] for row in rows} == {"vqgan/prior"} and {row["threads"] for row in rows} == {1}
    for row in rows:
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["ratio_vs_default"] == rows[0]["median_ms"] / row["median_ms"]
    assert (tmp_path / "cpu-session-options.md").read_text().startswith("| component |")


def test_ort_options_make_the_session_options_they_name():
    import onnxruntime as ort

    from genrt.runtime.backends.ort_options import OrtOptions

    chosen = OrtOptions().session_options(ort, 2)
    assert chosen.intra_op_num_threads == 2 and chosen.enable_cpu_mem_arena
    assert chosen.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert chosen.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    changed = OrtOptions(spinning=False, memory_arena=False, optimization="extended").session_options(ort, 1)
    assert changed.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert not changed.enable_cpu_mem_arena
    assert changed.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
