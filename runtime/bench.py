"""``genrt bench DIR``: per-stage latency of an exported pipeline on one backend, torch-free.

One benchmark = ``warmup`` untimed pipeline calls, then ``repeats`` timed calls with the same
arguments. For every timed call we record

- the pipeline's wall time (the user's view: what ``pipe(...)`` costs),
- its stage timings (``result.timings``: tokenize, text encoder, denoising loop, decoder, ...),
- each component runner's calls and the seconds spent inside the backend: GPU time from CUDA events on the
  runner's own stream where it has one (TensorRT; ONNX Runtime CUDA with cuda-python), else the wall clock
  around each call (the CPU).

The runtime's own overhead is the wall time minus the backend time of all components, as a
percentage of the wall time: scheduler arithmetic, guidance, tokenisation, casts and copies made by
the pipeline itself. Reported: median / p90 / p99 over the repeats, images/s, peak host memory,
device memory when a GPU is used, the size of every graph and engine, the clock of each number, and per
component what its runner opened (plain or fused graph, engine) and how its calls use CUDA graphs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Generator

from genrt.runtime.timing import CUDA_EVENTS, WALL_CLOCK, markdown_table, peak_host_memory_mb, summarize, write_report

# What the clock names of a report mean
CLOCK_NAMES = f"{WALL_CLOCK}: host perf_counter; {CUDA_EVENTS}: GPU time between CUDA events on the engine's stream"
# Columns of the per-stage table.
COLUMNS = ("stage", "calls/run", "median_ms", "p90_ms", "p99_ms", "ms/call", "share_%")


def _device_memory_mb() -> float | None:
    """GPU memory this process holds now (nvidia-smi), or None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True,
    )
    for line in result.stdout.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def _file_sizes(manifest) -> dict[str, dict[str, float]]:
    """Component -> {"onnx_mb": ..., "engine_mb": ...} of the files in the export folder."""
    sizes = {}
    for name, spec in manifest.components.items():
        graph = [spec.onnx] + ([spec.external_data] if spec.external_data else [])
        entry = {"onnx_mb": sum(p.stat().st_size for p in graph if p.is_file()) / 2**20}
        for key, records in (("engine_mb", spec.tensorrt_engines), ("fused_onnx_mb", spec.fused_graphs)):
            files = [record.path for record in records if record.path.is_file()]
            if files:
                entry[key] = max(p.stat().st_size for p in files) / 2**20
        sizes[name] = entry
    return sizes


def bench_pipeline(open_pipeline: Callable[[], object], generate: Callable[[object], object], *,
                   warmup: int = 1, repeats: int = 5) -> dict:
    """Benchmark the pipeline ``open_pipeline()`` returns (e.g. ``lambda: genrt.runtime.load(DIR)``); returns
    the report payload (see module doc).

    ``generate(pipe)`` makes one pipeline call (the same arguments every time) and returns its result.
    """
    return run_to_end(pipeline_calls(open_pipeline, generate, warmup=warmup, repeats=repeats))


def run_to_end(calls: Generator[None, None, dict]) -> dict:
    """Drive a call-by-call benchmark (:func:`pipeline_calls`) to its end; its report."""
    while True:
        try:
            next(calls)
        except StopIteration as finished:
            return finished.value


def pipeline_calls(open_pipeline: Callable[[], object], generate: Callable[[object], object], *,
                   warmup: int = 1, repeats: int = 5) -> Generator[None, None, dict]:
    """:func:`bench_pipeline` one call at a time, so that several pipelines can be timed interleaved
    (``benchmarks.pipeline``): the first ``next()`` opens the pipeline, each later one makes one call
    (warm-up, then timed); the generator returns the report."""
    with open_pipeline() as pipe:
        runners = {name: pipe.runners[name] for name in pipe.manifest.components if name in pipe.runners}
        for _ in range(warmup):
            yield
            generate(pipe)
        wall, stages, engine = [], {}, {name: [] for name in runners}
        calls = {name: 0 for name in runners}
        clocks = {name: WALL_CLOCK if r.device_seconds is None else CUDA_EVENTS for name, r in runners.items()}

        def inside(runner) -> float:  # seconds spent in the runner so far, on its clock
            return runner.engine_seconds if runner.device_seconds is None else runner.device_seconds

        for _ in range(repeats):
            yield
            before = {name: (r.calls, inside(r)) for name, r in runners.items()}
            start = time.perf_counter()
            result = generate(pipe)
            wall.append(time.perf_counter() - start)
            for stage, seconds in result.timings.items():
                if stage != "total":
                    stages.setdefault(stage, []).append(seconds)
            for name, runner in runners.items():
                engine[name].append(inside(runner) - before[name][1])
                calls[name] = runner.calls - before[name][0]
        batch = int(result.images.shape[0])
        device_memory = _device_memory_mb()
        used_backend = pipe.backend
        manifest = pipe.manifest
        opened = {name: {"source": r.source, "cuda_graphs": r.cuda_graphs, "clock": clocks[name]}
                  for name, r in runners.items()}

    summary = summarize(wall, stages, engine, calls)
    return {
        "family": manifest.family,
        "config": manifest.config,
        "precision": manifest.precision,
        "backend": used_backend,
        "clock": {"pipeline": WALL_CLOCK, "components": sorted(set(clocks.values()))},
        "runners": opened,
        "batch": batch,
        "image_shape": list(result.images.shape[1:]),
        "warmup": warmup,
        "repeats": repeats,
        **summary,
        "images_per_second": batch / (summary["total"]["median_ms"] / 1e3),
        "peak_host_memory_mb": peak_host_memory_mb(),
        "device_memory_mb": device_memory,
        "files": _file_sizes(manifest),
    }


def format_report(payload: dict) -> str:
    """The Markdown table and the summary lines ``genrt bench`` prints."""
    lines = [
        f"{payload['family']} / {payload['config']} / {payload['precision']} on {payload['backend']}: "
        f"batch {payload['batch']}, images {payload['image_shape']}, {payload['repeats']} runs after "
        f"{payload['warmup']} warm-up",
        "",
        markdown_table(payload["rows"], COLUMNS),
        "",
        f"clocks: pipeline and stages {payload['clock']['pipeline']}, [engine] rows "
        f"{' / '.join(payload['clock']['components'])} ({CLOCK_NAMES})",
        *(f"{name}: {runner['source']}; CUDA graphs {runner['cuda_graphs']}"
          for name, runner in payload["runners"].items()),
        f"images/s: {payload['images_per_second']:.3f}   runtime overhead: "
        f"{payload['runtime_overhead_percent']['median']:.1f}% of wall time (median)   "
        f"peak host memory: {payload['peak_host_memory_mb']:.0f} MB"
        + (f"   device memory: {payload['device_memory_mb']:.0f} MB" if payload["device_memory_mb"] else ""),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genrt.runtime.cli import add_generation_arguments

    add_generation_arguments(parser)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (default: 5)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for the JSON report and PNG chart (default: benchmarks/results)")


def main(args: argparse.Namespace) -> int:
    from genrt.errors import InputError
    from genrt.runtime.cli import generate, open_pipeline

    if args.repeats < 1 or args.warmup < 0:
        raise InputError(f"--repeats {args.repeats} / --warmup {args.warmup}", fix="use --repeats >= 1 and --warmup >= 0")
    if args.seed is None:
        args.seed = 0  # every timed call does the same work
    payload = bench_pipeline(lambda: open_pipeline(args), lambda pipe: generate(pipe, args),
                             warmup=args.warmup, repeats=args.repeats)
    payload["call"] = {key: getattr(args, key) for key in ("prompt", "class_id", "sampler", "steps", "guidance",
                                                          "height", "width", "num_images", "seed")}
    print(format_report(payload))
    name = f"bench-{payload['family']}-{payload['config']}-{payload['precision']}-{payload['backend']}"
    engine_rows = [row for row in payload["rows"] if row["stage"].startswith("[engine]")]
    chart = ([row["stage"] for row in engine_rows] + ["pipeline total"],
             [row["median_ms"] for row in engine_rows] + [payload["total"]["median_ms"]],
             f"{name}: median ms per pipeline call")
    path = write_report(args.out, name, payload, chart)
    print(f"wrote {path}")
    return 0
