"""Every component of a family on every backend of this machine, in one run, as ratios to PyTorch eager.

For each component at its opt shape: PyTorch eager in float32 and in half precision (fp16 on a GPU,
bf16 on a CPU), ``torch.compile`` (with ``--compile``), and the exported graph on every runtime
backend available here (ONNX Runtime CPU; ONNX Runtime CUDA and TensorRT on a GPU), through the same
runners ``genrt.runtime`` uses. Ratios to eager float32 come from one process, so they hold on a
noisy machine even when absolute times do not. FLOPs are counted once per component
(``torch.utils.flop_counter``) to show achieved TFLOP/s, against the device's peak on a known GPU.

    python -m benchmarks.compare_backends --family ldm --config tiny --resolution 64 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.torch_timing import count_flops, time_torch, torch_variants
from genrt.runtime.benchmark import markdown_table, peak_host_memory_mb, time_calls, write_report

# Dense fp16/bf16 tensor-core peak in TFLOP/s (NVIDIA data sheets), by a substring of the GPU name.
PEAK_HALF_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0,
                    "L40S": 362.1, "RTX 4090": 165.2, "A10G": 125.0, "L4": 121.0}
COLUMNS = ("component", "backend", "median_ms", "p90_ms", "p99_ms", "speedup_vs_eager", "gflop", "tflop/s",
           "%_of_peak")


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


def _time_runtime(directory: Path, backend: str, names: list[str], inputs: dict, warmup: int, repeats: int) -> dict:
    """Component -> LatencyStats of the exported graph/engine on ``backend``."""
    from genrt.runtime.backends import Runners
    from genrt.runtime.manifest import load_manifest

    manifest = load_manifest(directory)
    runners = Runners(manifest, names, backend=backend)
    try:
        return {
            name: time_calls(lambda r=runners[name], f=_numpy_feeds(runners[name].spec, inputs[name]): r.infer(f),
                             warmup=warmup, repeats=repeats)
            for name in names
        }
    finally:
        runners.close()


def compare(family: str, config: str, options, *, device: torch.device, compile: bool, warmup: int, repeats: int,
            build_engines: bool = False) -> list[dict]:
    """Rows of the comparison table for every component of ``family``/``config`` exported with ``options``.

    The graphs are exported in fp16 on a GPU and fp32 on a CPU (where ONNX Runtime has no fast fp16).
    """
    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder

    precision = "fp16" if device.type == "cuda" else "fp32"
    plan = family_plan(family, config, "fp32", options)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    peak = device_peak_tflops(device)
    rows, inputs, eager_ms, flops = [], {}, {}, {}
    for name, spec in plan.components.items():
        module = spec.module().eval().to(device)
        inputs[name] = spec.sample_inputs("opt", seed=0)
        device_inputs = {k: v.to(device) for k, v in inputs[name].items()}
        flops[name] = count_flops(module, device_inputs)
        for variant, (model, feeds) in torch_variants(module, device_inputs, half_dtype=half, compile=compile).items():
            stats = time_torch(model, feeds, warmup=warmup, repeats=repeats)
            eager_ms.setdefault(name, stats.median_ms)
            rows.append({"component": name, "backend": variant, **_stats_columns(stats)})
        del module
    with tempfile.TemporaryDirectory(prefix="genrt-compare-") as scratch:
        directory = Path(scratch) / "export"
        export_folder(family_plan(family, config, precision, options), directory, precision)
        if build_engines:
            from genrt.export.engine import BuildSettings, build_engines as build

            build(directory, BuildSettings(flavour="tensorrt", compute_capabilities=()))
        for backend in runtime_backends(device):
            for name, stats in _time_runtime(directory, backend, list(plan.components), inputs, warmup, repeats).items():
                rows.append({"component": name, "backend": f"{backend}-{precision}", **_stats_columns(stats)})
    for row in rows:
        seconds = row["median_ms"] / 1e3
        row["speedup_vs_eager"] = eager_ms[row["component"]] / row["median_ms"]
        row["gflop"] = flops[row["component"]] / 1e9
        row["tflop/s"] = flops[row["component"]] / seconds / 1e12
        row["%_of_peak"] = 100.0 * row["tflop/s"] / peak if peak else None
    order = list(plan.components)
    return sorted(rows, key=lambda row: order.index(row["component"]))


def _stats_columns(stats) -> dict:
    return {"median_ms": stats.median_ms, "p90_ms": stats.p90_ms, "p99_ms": stats.p99_ms}


def main(argv: list[str] | None = None) -> int:
    from genrt.export.options import ExportOptions, Range

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=("ldm", "vqgan", "imagen"))
    parser.add_argument("--config", default="tiny", help="config name (default: tiny)")
    parser.add_argument("--resolution", type=int, default=None, help="image size (default: the config's)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--engines", action="store_true", help="also build and time TensorRT engines (GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    resolution = None if args.resolution is None else Range(args.resolution, args.resolution, args.resolution)
    options = ExportOptions(batch=Range(args.batch, args.batch, args.batch), resolution=resolution,
                            random_weights=True, seed=0)
    device = torch.device(args.device)
    rows = compare(args.family, args.config, options, device=device, compile=args.compile, warmup=args.warmup, repeats=args.repeats,
                   build_engines=args.engines)
    print(markdown_table(rows, COLUMNS))
    name = f"compare-{args.family}-{args.config}-{device.type}"
    payload = {"family": args.family, "config": args.config, "batch": args.batch, "resolution": args.resolution,
               "device": str(device), "warmup": args.warmup, "repeats": args.repeats, "rows": rows,
               "peak_host_memory_mb": peak_host_memory_mb(),
               "peak_device_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}
    chart = ([f"{r['component']} {r['backend']}" for r in rows], [r["speedup_vs_eager"] for r in rows],
             f"{name}: speed-up vs PyTorch eager fp32 (higher is faster)")
    print(f"wrote {write_report(args.out, name, payload, chart)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
