"""The timing library: warm-up, synchronisation, percentiles, CUDA-event timers, per-stage summaries and stamped
reports (``genrt bench``, the command, is :mod:`genrt.runtime.bench`).

Two clocks: the host's wall clock (``time.perf_counter``: CPU backends, and whole pipeline calls) and, for work
on a CUDA stream, CUDA events (:class:`CudaEventTimer`: ``cudaEventRecord`` on the stream around the work,
``cudaEventElapsedTime`` once it finished), which charge each engine its GPU time without a synchronisation
after every call. Reports say which clock measured what.

Torch-free, so ``genrt bench`` (runtime only) and the scripts in ``benchmarks/`` (which also time
PyTorch) report in one format: a Markdown table on stdout, JSON and a PNG bar chart on disk, each
stamped with the device, driver, library versions and date.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from genrt.fileio import atomic_path, write_text_atomic

# Libraries whose versions a report records when they are installed (never imported here).
STAMPED_DISTRIBUTIONS = (
    "genrt", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu",
    "tensorrt", "tensorrt-rtx-cu13", "cuda-python", "diffusers", "transformers",
)


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings, in milliseconds."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> "LatencyStats":
        if len(seconds) == 0:
            raise ValueError("no timings to summarise")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(
            median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            runs=len(ms),
        )


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 10,
    synchronize: Callable[[], None] | None = None,
) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``synchronize`` (e.g. ``torch.cuda.synchronize`` or a CUDA stream sync) runs before each clock
    read, so asynchronous GPU work is counted where it happens.
    """
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return LatencyStats.from_seconds(seconds)


WALL_CLOCK = "wall"  # time.perf_counter on the host
CUDA_EVENTS = "cuda-events"  # cudaEventElapsedTime between events recorded on the stream


class CudaEventTimer:
    """GPU time of the work enqueued on one CUDA stream between each ``start()`` and ``stop()``.

    Both record an event on the stream (``cudaEventRecord``), so the host never waits; ``seconds()`` waits for
    the last stop event and adds up ``cudaEventElapsedTime`` of every pair recorded since, reusing their events.
    ``cudart``: ``cuda.bindings.runtime``; ``check`` unwraps its ``(error, value)`` results; ``stream``: the
    stream object (int handle or cudaStream_t).
    """

    def __init__(self, cudart, check: Callable, stream):
        self._cudart, self._check, self._stream = cudart, check, stream
        self._free: list = []  # events ready for reuse
        self._pending: list[tuple] = []  # (start, stop) pairs recorded and not yet read
        self._open = None  # start event of a pair not yet stopped
        self._total = 0.0  # seconds of the pairs read so far

    def _event(self):
        return self._free.pop() if self._free else self._check(self._cudart.cudaEventCreate())

    def start(self) -> None:
        self._open = self._event()
        self._check(self._cudart.cudaEventRecord(self._open, self._stream))

    def stop(self) -> None:
        stop = self._event()
        self._check(self._cudart.cudaEventRecord(stop, self._stream))
        self._pending.append((self._open, stop))
        self._open = None

    def seconds(self) -> float:
        """GPU seconds of every start/stop pair so far (waits for the work of the last one)."""
        if self._pending:
            self._check(self._cudart.cudaEventSynchronize(self._pending[-1][1]))
        for start, stop in self._pending:
            self._total += self._check(self._cudart.cudaEventElapsedTime(start, stop)) / 1e3
            self._free += [start, stop]
        self._pending.clear()
        return self._total

    def close(self) -> None:
        """Destroy every event (the stream's work must be finished or abandoned)."""
        for start, stop in self._pending:
            self._free += [start, stop]
        for event in self._free + ([self._open] if self._open is not None else []):
            self._check(self._cudart.cudaEventDestroy(event))
        self._free.clear()
        self._pending.clear()
        self._open = None


def summarize(wall: list[float], stages: dict[str, list[float]], components: dict[str, list[float]],
              calls: dict[str, int]) -> dict:
    """Rows, total and overhead of ``repeats`` timed calls.

    ``wall``: seconds per call; ``stages``: stage -> seconds per call; ``components``: component -> seconds
    spent inside it per call; ``calls``: component -> calls per pipeline call (0: unused, no row).
    """
    total = LatencyStats.from_seconds(wall)

    def row(stage: str, seconds: list[float], calls: int | None = None) -> dict:
        stats = LatencyStats.from_seconds(seconds)
        per_call = {} if calls is None else {"calls/run": calls, "ms/call": stats.median_ms / calls}
        return {"stage": stage, **per_call, "median_ms": stats.median_ms, "p90_ms": stats.p90_ms,
                "p99_ms": stats.p99_ms, "share_%": 100.0 * stats.median_ms / total.median_ms}

    rows = [row(stage, seconds) for stage, seconds in stages.items()]
    # a component this kind of call does not use (e.g. the VAE encoder in text-to-image) gets no row
    rows += [row(f"[engine] {name}", seconds, calls[name]) for name, seconds in components.items() if calls[name]]
    rows.append(row("pipeline total", wall))
    inside = np.sum([components[name] for name in components], axis=0)
    overhead = 100.0 * (np.asarray(wall) - inside) / np.asarray(wall)
    return {"rows": rows, "total": total.__dict__,
            "runtime_overhead_percent": {"median": float(np.median(overhead)), "max": float(np.max(overhead))}}


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _nvidia_smi(query: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
    )
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def environment_stamp() -> dict:
    """Device, driver, library versions, date and the machine's load, for every report."""
    versions = {}
    for name in STAMPED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    gpu = _nvidia_smi("name,driver_version,memory.total")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        # 1/5/15-minute load averages when the report is written: how busy the (shared) machine was
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpu": gpu,
        "python": sys.version.split()[0],
        "versions": versions,
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Rows of dicts -> a GitHub Markdown table over ``columns`` (floats to 3 significant decimals)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def bar_chart_png(path: str | Path, labels: Sequence[str], values: Sequence[float], title: str) -> None:
    """A horizontal bar chart (PIL only), written atomically."""
    from PIL import Image, ImageDraw

    bar_height, left, width = 22, 260, 900
    height = 40 + bar_height * len(labels) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    top = max(values) if len(values) and max(values) > 0 else 1.0
    for i, (label, value) in enumerate(zip(labels, values)):
        y = 40 + i * bar_height
        draw.text((10, y + 4), label[:40], fill="black")
        length = int((width - left - 120) * value / top)
        draw.rectangle([left, y + 2, left + max(length, 1), y + bar_height - 4], fill=(70, 120, 200))
        draw.text((left + length + 6, y + 4), f"{value:.3g}", fill="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_report(out_dir: str | Path, name: str, payload: dict, chart: tuple[list[str], list[float], str] | None = None) -> Path:
    """Write ``name.json`` (payload + environment stamp) and optionally ``name.png``; return the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"environment": environment_stamp(), **payload}
    json_path = out_dir / f"{name}.json"
    write_text_atomic(json_path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    if chart is not None:
        labels, values, title = chart
        bar_chart_png(out_dir / f"{name}.png", labels, values, title)
    return json_path
