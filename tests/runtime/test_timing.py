import json
import time

import numpy as np
import pytest

from genrt.runtime.timing import LatencyStats, markdown_table, time_calls, write_report


def test_latency_stats_percentiles():
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.runs == 100
    assert stats.median_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert stats.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert stats.min_ms == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no timings"):
        LatencyStats.from_seconds([])


def test_time_calls_warms_up_and_synchronises():
    calls, syncs = [], []
    stats = time_calls(lambda: (calls.append(1), time.sleep(0.002)), warmup=3, repeats=5, synchronize=lambda: syncs.append(1))
    assert len(calls) == 8 and stats.runs == 5
    assert len(syncs) == 6  # once after warm-up, once per timed call
    assert stats.min_ms >= 2.0


def test_markdown_table_and_report(tmp_path):
    table = markdown_table([{"stage": "unet", "ms": 12.3456}], ["stage", "ms"])
    assert table.splitlines() == ["| stage | ms |", "|---|---|", "| unet | 12.346 |"]
    path = write_report(tmp_path, "smoke", {"rows": [1]}, chart=(["a", "b"], [1.0, 2.0], "t"))
    document = json.loads(path.read_text())
    assert document["rows"] == [1]
    assert {"date", "versions", "gpu", "python"} <= set(document["environment"])
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
