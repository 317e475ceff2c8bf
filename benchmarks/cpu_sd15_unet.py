"""The real-size SD 1.5 U-Net on the CPU: ONNX Runtime fp32 against PyTorch's CPU options, in one run.

One U-Net call at 512x512 with guidance (batch 2: latents (2, 4, 64, 64), text (2, 77, 768)), random
weights on the real config (``tests/fixtures/sd15/unet/config.json``, checked equal to the ``sd15``
preset the export uses). The graph is exported in a child process (fp32 export peaks near 14.5 GB; the
child returns that memory before the timing starts) and opened as the runtime opens a CPU session
(``open_session``). Contenders: PyTorch eager fp32, eager bf16, ``torch.compile`` (inductor, fp32; it
compiles again for each thread count) and ONNX Runtime fp32, interleaved call by call
(``benchmarks.compare_backends.time_interleaved``), once per thread count (``--threads 1 2``: torch and ONNX
Runtime alike). ``ort_vs_best_torch`` is the fastest PyTorch option's median over ONNX Runtime's. Parity: each
contender against eager fp32 on the same input, relative error max|x - torch| / max|torch|; ONNX Runtime
within the fp32 graph bound (1e-4).

Needs about 13 GB of free memory and minutes per round on a 2-core machine; keep ``--repeats`` small.

    python -m benchmarks.cpu_sd15_unet --threads 1 2 --repeats 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.compare_backends import time_interleaved
from benchmarks.torch_timing import cast_inputs
from genrt.fileio import write_text_atomic
from genrt.runtime.timing import markdown_table, peak_host_memory_mb, write_report

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sd15" / "unet" / "config.json"
FP32_BOUND = 1e-4  # relative error of fp32 graphs against PyTorch (README, "What is checked")
COLUMNS = ("threads", "backend", "median_ms", "p10_ms", "p90_ms", "runs", "speedup_vs_eager_fp32",
           "rel_error_vs_fp32")
ORT = "onnxruntime-cpu-fp32"


def _options(resolution: int, batch: int):
    from genrt.export.options import ExportOptions, Range

    return ExportOptions(batch=Range(batch, batch, batch), resolution=Range(resolution, resolution, resolution),
                         random_weights=True, seed=0)


def _plan(config: str, resolution: int, batch: int):
    from genrt.export.families import family_plan

    return family_plan("ldm", config, "fp32", _options(resolution, batch))


def _export(directory: str, config: str, resolution: int, batch: int) -> None:
    """Child process: export the fp32 U-Net into ``directory``."""
    from genrt.export.folder import export_folder

    export_folder(_plan(config, resolution, batch), directory, components=["unet"])


def check_real_config() -> None:
    """The ``sd15`` preset's U-Net is the one the real config.json describes."""
    from genrt.sdk.ldm.config import get_config
    from genrt.sdk.ldm.diffusers_format import unet_config_from_diffusers

    real = unet_config_from_diffusers(json.loads(CONFIG.read_text()), CONFIG.parent)
    if real != get_config("sd15").unet:
        raise SystemExit(f"the sd15 preset's U-Net differs from {CONFIG}: {real} != {get_config('sd15').unet}")


def run(config: str, resolution: int, batch: int, threads: tuple[int, ...], warmup: int, repeats: int,
        compile: bool = True) -> dict:
    """``config``: "sd15" (checked against the real config.json) or a smaller ldm preset (tests)."""
    from genrt.runtime.backends.base import numpy_dtype
    from genrt.runtime.backends.onnxruntime import open_session

    if config == "sd15":
        check_real_config()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    rows, parity, versus_best = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="genrt-sd15-unet-") as scratch:
        directory = Path(scratch) / "export"
        child = multiprocessing.get_context("spawn").Process(target=_export, args=(str(directory), config, resolution, batch))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the U-Net export failed (exit code {child.exitcode})")
        spec = _plan(config, resolution, batch).components["unet"]
        inputs = spec.sample_inputs("opt", seed=0)
        fp32 = spec.module().eval()
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        bf16_inputs = cast_inputs(inputs, torch.bfloat16)
        compiled = torch.compile(fp32) if compile else None
        feeds = {t.name: inputs[t.name].numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}
        for count in threads:
            torch.set_num_threads(count)
            session = open_session(str(directory / "unet" / "model.onnx"), "cpu", threads=count)
            contenders = {"torch-eager-fp32": lambda: fp32(**inputs).float().numpy(),
                          "torch-eager-bf16": lambda: bf16(**bf16_inputs).float().numpy()}
            if compiled is not None:
                contenders["torch-compile-fp32"] = lambda: compiled(**inputs).float().numpy()
            contenders[ORT] = lambda s=session: s.run(["model_output"], feeds)[0]
            outputs = {}  # the last output of each contender, for parity
            calls = {name: lambda name=name, fn=fn: outputs.__setitem__(name, fn()) for name, fn in contenders.items()}
            with torch.inference_mode():
                spreads = time_interleaved(calls, warmup=warmup, repeats=repeats)
            del session
            reference = outputs["torch-eager-fp32"]
            scale = float(np.abs(reference).max())
            eager = spreads["torch-eager-fp32"].median_ms
            found = [{"threads": count, "backend": name, "median_ms": s.median_ms, "p10_ms": s.p10_ms,
                      "p90_ms": s.p90_ms, "runs": s.runs, "speedup_vs_eager_fp32": eager / s.median_ms,
                      "rel_error_vs_fp32": float(np.abs(outputs[name] - reference).max()) / scale}
                     for name, s in spreads.items()]
            rows += found
            error = found[-1]["rel_error_vs_fp32"]
            parity[f"{ORT} t{count}"] = {"rel": error, "bound": FP32_BOUND, "passed": error < FP32_BOUND}
            best = min((row for row in found if row["backend"] != ORT), key=lambda row: row["median_ms"])
            versus_best[str(count)] = {"best_torch": best["backend"],
                                       "ort_vs_best_torch": best["median_ms"] / spreads[ORT].median_ms}
    return {"model": f"ldm {config} U-Net (random weights)", "resolution": resolution, "batch": batch,
            "threads": list(threads), "warmup": warmup, "repeats": repeats,
            "timing": "interleaved call by call (ABBA rounds), per thread count; median, p10, p90",
            "load_average_at_start": load_at_start, "parity": parity, "ort_vs_best_torch": versus_best,
            "rows": rows, "peak_host_memory_mb": peak_host_memory_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sd15", help="ldm config (default: sd15, the real config)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2, help="U-Net batch (default 2: one image with guidance)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    payload = run(args.config, args.resolution, args.batch, tuple(args.threads), args.warmup, args.repeats,
                  args.compile)
    table = markdown_table(payload["rows"], COLUMNS)
    print(table)
    name = f"cpu-unet-{args.config}-{args.resolution}"
    path = write_report(args.out, name, payload)
    write_text_atomic(path.with_suffix(".md"), table + "\n")
    for count, found in payload["ort_vs_best_torch"].items():
        print(f"{count} thread(s): ONNX Runtime {found['ort_vs_best_torch']:.2f}x the best PyTorch option "
              f"({found['best_torch']})")
    print(f"wrote {path}")
    return 0 if all(check["passed"] for check in payload["parity"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
