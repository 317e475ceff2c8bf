"""Every component of a family on every backend of this machine, in one run, as ratios to PyTorch eager.

For each component at its opt shape (the shape the pipeline calls it with): PyTorch eager in float32 and
in half precision (fp16 on a GPU, bf16 on a CPU), ``torch.compile`` (with ``--compile``), and the exported
graph on every runtime backend available here (ONNX Runtime CPU; ONNX Runtime CUDA and TensorRT on a
GPU), through the runners of the ``genrt.runtime`` pipeline. Everything is measured once per thread count
(``--threads 1 2``: ``torch.set_num_threads`` and ONNX Runtime's intra-op threads alike).

Honest ratios on a loaded machine: the contenders of one component are interleaved call by call (one
call each per round, the order reversed every other round: ABBA), so load drift reaches all of them
alike. Each row gives the median and the 10th/90th percentiles of its calls, and ``speedup_vs_eager`` is
eager float32's median over the row's. FLOPs are counted once per component
(``torch.utils.flop_counter``) to show achieved TFLOP/s, against the device's peak on a known GPU.

    python -m benchmarks.compare_backends --family ldm --config tiny --threads 1 2 --compile --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks.torch_timing import count_flops, torch_variants
from genrt.fileio import write_text_atomic
from genrt.runtime.timing import markdown_table, peak_host_memory_mb, write_report

# Dense fp16/bf16 tensor-core peak in TFLOP/s (NVIDIA data sheets), by a substring of the GPU name.
PEAK_HALF_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0,
                    "L40S": 362.1, "RTX 4090": 165.2, "A10G": 125.0, "L4": 121.0}
COLUMNS = ("component", "threads", "backend", "median_ms", "p10_ms", "p90_ms", "speedup_vs_eager", "gflop",
           "tflop/s", "%_of_peak")
EAGER_FP32 = "torch-eager-fp32"
# Sleep before each timed call: the previous contender's idle worker threads (OpenMP's and ONNX Runtime's
# spin-wait for a while after a parallel region) go to sleep instead of taking cores from the next one.
PAUSE_S = 0.02


@dataclass(frozen=True)
class Spread:
    """Median and spread of one contender's timed calls, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> "Spread":
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), len(ms))


def time_interleaved(calls: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                     synchronize: Callable[[], None] | None = None, pause_s: float = PAUSE_S) -> dict[str, Spread]:
    """Time ``calls`` round by round: each round calls every contender once, in reversed order every other
    round, so drift in the machine's load reaches them alike. ``warmup`` untimed rounds first; ``pause_s``
    of sleep before each call."""
    sync = synchronize or (lambda: None)
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            sync()
            time.sleep(pause_s)
            start = time.perf_counter()
            calls[name]()
            sync()
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: Spread.from_seconds(seconds[name]) for name in names}


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_HALF_TFLOPS.items() if key in name), None)


def runtime_backends(device: torch.device) -> list[str]:
    """genrt.runtime backends to time on this machine."""
    from genrt.runtime.backends.onnxruntime import cuda_available
    from genrt.runtime.backends.tensorrt import available_flavours

    backends = ["onnxruntime-cpu"] if device.type == "cpu" else []
    if device.type == "cuda" and cuda_available():
        backends.append("onnxruntime-cuda")
    if device.type == "cuda" and available_flavours():
        backends.append("tensorrt")
    return backends


def _numpy_feeds(spec, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    from genrt.runtime.backends.base import numpy_dtype

    return {t.name: inputs[t.name].cpu().numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}


def _torch_call(module: torch.nn.Module, feeds: dict[str, torch.Tensor]) -> Callable[[], object]:
    def call():
        with torch.inference_mode():
            return module(**feeds)

    return call


def compare(family: str, config: str, options, *, device: torch.device, compile: bool, warmup: int, repeats: int,
            threads: tuple[int, ...] = (1,), components: tuple[str, ...] | None = None,
            build_engines: bool = False) -> list[dict]:
    """Rows of the comparison table for ``components`` (None: every component) of ``family``/``config``
    exported with ``options``, per thread count in ``threads``.

    The graphs are exported in fp16 on a GPU and fp32 on a CPU (where ONNX Runtime has no fast fp16).
    """
    import genrt.runtime
    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder

    precision = "fp16" if device.type == "cuda" else "fp32"
    plan = family_plan(family, config, "fp32", options)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    peak = device_peak_tflops(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else None
    names = list(plan.components) if components is None else [n for n in plan.components if n in components]
    inputs, flops, variants = {}, {}, {}
    for name in names:
        spec = plan.components[name]
        module = spec.module().eval().to(device)
        inputs[name] = spec.sample_inputs("opt", seed=0)
        device_inputs = {k: v.to(device) for k, v in inputs[name].items()}
        flops[name] = count_flops(module, device_inputs)
        variants[name] = torch_variants(module, device_inputs, half_dtype=half, compile=compile)
    rows = []
    with tempfile.TemporaryDirectory(prefix="genrt-compare-") as scratch:
        directory = Path(scratch) / "export"
        export_folder(family_plan(family, config, precision, options), directory)
        if build_engines:
            from genrt.export.engine import BuildSettings, build_engines as build

            build(directory, BuildSettings(flavour="tensorrt", compute_capabilities=()))
        for count in threads:
            torch.set_num_threads(count)
            opened = {backend: genrt.runtime.load(directory, backend=backend, threads=count)
                      for backend in runtime_backends(device)}
            try:
                for name in names:
                    calls = {variant: _torch_call(model, feeds) for variant, (model, feeds) in variants[name].items()}
                    for backend, pipe in opened.items():
                        runner = pipe.runners[name]
                        calls[f"{backend}-{precision}"] = (
                            lambda r=runner, f=_numpy_feeds(runner.spec, inputs[name]): r.infer(f))
                    spreads = time_interleaved(calls, warmup=warmup, repeats=repeats, synchronize=synchronize)
                    rows += [_row(name, count, backend, spread, spreads[EAGER_FP32], flops[name], peak)
                             for backend, spread in spreads.items()]
            finally:
                for pipe in opened.values():
                    pipe.close()
    return rows


def _row(component: str, threads: int, backend: str, spread: Spread, eager: Spread, flops: int,
         peak: float | None) -> dict:
    tflops = flops / (spread.median_ms / 1e3) / 1e12
    return {"component": component, "threads": threads, "backend": backend, "median_ms": spread.median_ms,
            "p10_ms": spread.p10_ms, "p90_ms": spread.p90_ms, "runs": spread.runs,
            "speedup_vs_eager": eager.median_ms / spread.median_ms, "gflop": flops / 1e9, "tflop/s": tflops,
            "%_of_peak": 100.0 * tflops / peak if peak else None}


def main(argv: list[str] | None = None) -> int:
    from genrt.export.options import ExportOptions, Range

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=("ldm", "vqgan", "imagen"))
    parser.add_argument("--config", default="tiny", help="config name (default: tiny)")
    parser.add_argument("--resolution", type=int, default=None, help="image size (default: the config's)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch of every component (default: the export's opt, 2 with guidance)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts for torch and ONNX Runtime, each measured in turn (default: 1 2)")
    parser.add_argument("--components", nargs="+", default=None, help="components to time (default: all)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--engines", action="store_true", help="also build and time TensorRT engines (GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    resolution = None if args.resolution is None else Range(args.resolution, args.resolution, args.resolution)
    batch = None if args.batch is None else Range(args.batch, args.batch, args.batch)
    options = ExportOptions(batch=batch, resolution=resolution, random_weights=True, seed=0)
    device = torch.device(args.device)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    rows = compare(args.family, args.config, options, device=device, compile=args.compile, warmup=args.warmup,
                   repeats=args.repeats, threads=tuple(args.threads),
                   components=None if args.components is None else tuple(args.components), build_engines=args.engines)
    table = markdown_table(rows, COLUMNS)
    print(table)
    name = f"compare-{args.family}-{args.config}-{device.type}"
    if device.type == "cpu":  # one report per set of thread counts: 2 threads may be measured apart on quiet cores
        name += "-t" + "-".join(map(str, args.threads))
    payload = {"family": args.family, "config": args.config, "components": args.components, "batch": args.batch,
               "resolution": args.resolution,
               "device": str(device), "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
               "timing": "interleaved call by call (ABBA rounds); median, p10, p90 of the timed calls",
               "load_average_at_start": load_at_start, "rows": rows, "peak_host_memory_mb": peak_host_memory_mb(),
               "peak_device_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}
    chart = ([f"{r['component']} t{r['threads']} {r['backend']}" for r in rows], [r["speedup_vs_eager"] for r in rows],
             f"{name}: speed-up vs PyTorch eager fp32 (higher is faster)")
    path = write_report(args.out, name, payload, chart)
    write_text_atomic(path.with_suffix(".md"), table + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
