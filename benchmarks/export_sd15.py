"""Export the real-size SD 1.5 U-Net (random weights, fp16) and build it with TensorRT-RTX; time and measure it.

    python -m benchmarks.export_sd15 [--work DIR] [--precision fp16] [--out benchmarks/results/export_sd15.json]

Each stage runs in its own child process so that its peak resident memory is its own (``os.wait4``
returns the child's ``ru_maxrss``):

1. ``export``: build the 860M-parameter U-Net from ``genrt.sdk.ldm`` (sd15 config, random weights),
   cast to the precision with float32 islands, ``torch.onnx.export`` + onnxslim clean-up
   (``genrt export ldm --config sd15 --components unet``);
2. ``build``: a TensorRT-RTX engine for SM86 with the manifest's dynamic profile (``genrt build``);
3. ``rebuild``: the same build again, which must be an engine-cache hit.

Needs several GB of RAM (the float32 weights, their half copy and the serialized graph coexist);
run it on a quiet machine. Results go to a JSON file with the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from genrt.manifest import MANIFEST_FILE, read_manifest
from genrt.typedjson import to_json

RESULTS = Path(__file__).parent / "results" / "export_sd15.json"


def run_stage(argv: list[str]) -> dict:
    """Run ``genrt`` with ``argv`` in a child process; its wall time, peak RSS, exit code and output."""
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
    child = subprocess.Popen([sys.executable, "-m", "genrt.cli", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    return {
        "command": "genrt " + " ".join(argv),
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),  # ru_maxrss is in KiB on Linux
        "exit_code": code,
        "output_tail": output.strip().splitlines()[-6:],
    }


def environment() -> dict:
    import onnx
    import onnxruntime
    import torch

    try:
        import tensorrt_rtx

        trt_version = tensorrt_rtx.__version__
    except ImportError:
        trt_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tensorrt_rtx": trt_version,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/genrt-export-sd15", help="export folder (replaced)")
    parser.add_argument("--precision", default="fp16", help="export precision (default: fp16)")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    parser.add_argument("--keep", action="store_true", help="keep the export folder afterwards")
    args = parser.parse_args()

    work = Path(args.work)
    report = {"model": "sd15 unet (random weights)", "precision": args.precision, "environment": environment()}
    stages = {
        "export": ["export", "ldm", "--config", "sd15", "--random-weights", "--components", "unet",
                   "--precision", args.precision, "--out", str(work), "--force"],
        "build": ["build", str(work), "--trt", "tensorrt_rtx", "--compute-capability", "8.6"],
        "rebuild": ["build", str(work), "--trt", "tensorrt_rtx", "--compute-capability", "8.6"],
    }
    report["stages"] = {}
    for name, argv in stages.items():
        print(f"[{name}] genrt {' '.join(argv)}", flush=True)
        result = run_stage(argv)
        report["stages"][name] = result
        print(f"[{name}] {result['seconds']} s, peak RSS {result['peak_rss_gb']} GB, exit {result['exit_code']}",
              flush=True)
        if result["exit_code"] != 0:
            print("\n".join(result["output_tail"]), file=sys.stderr)
            break
    if (work / MANIFEST_FILE).is_file():
        manifest = read_manifest(work)
        entry = to_json(manifest.component("unet"), manifest.root)  # the manifest's JSON of the entry
        onnx_files = [manifest.root / entry["onnx"]] + (
            [manifest.root / entry["external_data"]] if entry["external_data"] else [])
        report["unet"] = {
            "onnx_bytes": sum(p.stat().st_size for p in onnx_files),
            "external_data": entry["external_data"],
            "nodes": entry["nodes"],
            "fp32_islands": entry["fp32_islands"],
            "profile": entry["profile"],
            "engines": [{"path": e["path"], "bytes": (manifest.root / e["path"]).stat().st_size,
                         "compute_capabilities": e["compute_capabilities"]} for e in entry["engines"]],
        }
    report["rebuild_was_cache_hit"] = "cache hit" in " ".join(report["stages"].get("rebuild", {}).get("output_tail", []))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s["exit_code"] == 0 for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
