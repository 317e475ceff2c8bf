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


def test_the_runtime_opens_sessions_with_the_measured_options_and_takes_overrides():
    import onnxruntime as ort
    import pytest

    from genrt.errors import GenrtError
    from genrt.runtime.backends.onnxruntime import session_options

    chosen = session_options(ort, 2)
    assert chosen.intra_op_num_threads == 2 and chosen.enable_cpu_mem_arena
    assert chosen.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert chosen.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    changed = session_options(ort, 1, spinning=False, memory_arena=False, optimization="extended")
    assert changed.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert not changed.enable_cpu_mem_arena
    assert changed.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with pytest.raises(GenrtError, match="optimisation level 'fast'"):
        session_options(ort, 1, optimization="fast")
