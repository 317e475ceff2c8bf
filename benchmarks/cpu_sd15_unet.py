"""The real-size SD 1.5 U-Net on the CPU: ONNX Runtime fp32 and int8 against PyTorch's CPU options, in one run.

One U-Net call at 512x512 with guidance (batch 2: latents (2, 4, 64, 64), text (2, 77, 768)), random
weights on the real config (``tests/fixtures/sd15/unet/config.json``, checked equal to the ``sd15``
preset the export uses). The graph is exported in a child process (fp32 export peaks near 14.5 GB; the
child returns that memory before the timing starts), with ``--int8`` its static int8 graph
(``genrt.export.quantize``, calibrated on other sample inputs than the timed one), and opened as the runtime opens a CPU session
(``open_session``). ``--export-dir`` keeps the graphs for a later run (a stopped run resumes without exporting
again). Contenders: PyTorch eager fp32, eager bf16, ``torch.compile`` (inductor, fp32; it compiles again for
each thread count), ONNX Runtime fp32 (and int8), interleaved call by call
(``benchmarks.compare_backends.time_interleaved``), once per thread count (``--threads 1 2``: torch and ONNX
Runtime alike). ``ort_vs_best_torch`` gives the fastest PyTorch option's median over each ONNX Runtime graph's.
Parity: each contender against eager fp32 on the same input, relative error max|x - torch| / max|torch|; ONNX
Runtime fp32 within the fp32 graph bound (1e-4), int8 within INT8_BOUND.

Needs about 13 GB of free memory and minutes per round on a 2-core machine; keep ``--repeats`` small. ``--int8``
is for small U-Nets for now: the memory of ONNX Runtime's calibration grows with the activations (tiny U-Net,
batch 2: 0.7 GB at 64 px, 3.2 GB at 128 px, killed at 20 GB at 256 px), far past this machine at 512 px.

    python -m benchmarks.cpu_sd15_unet --threads 1 2 --repeats 3 --export-dir /tmp/sd15-unet --out benchmarks/results
"""

from __future__ import annotations

import argparse
import contextlib
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
# relative error of the static int8 graph (W8A8: 8-bit weights and activations keep about 2 significant digits)
INT8_BOUND = 1e-1
INT8_GRAPH = "unet-int8/model.onnx"
CALIBRATION_SEEDS = (1, 2, 3, 4)  # sample inputs the int8 activation ranges come from (the timed input is seed 0)
COLUMNS = ("threads", "backend", "median_ms", "p10_ms", "p90_ms", "runs", "speedup_vs_eager_fp32",
           "rel_error_vs_fp32")
ORT = "onnxruntime-cpu-fp32"
ORT_INT8 = "onnxruntime-cpu-int8"
BOUNDS = {ORT: FP32_BOUND, ORT_INT8: INT8_BOUND}


def _options(resolution: int, batch: int):
    from genrt.export.options import ExportOptions, Range

    return ExportOptions(batch=Range(batch, batch, batch), resolution=Range(resolution, resolution, resolution),
                         random_weights=True, seed=0)


def _plan(config: str, resolution: int, batch: int):
    from genrt.export.families import family_plan

    return family_plan("ldm", config, "fp32", _options(resolution, batch))


def _export(directory: str, config: str, resolution: int, batch: int, int8: bool) -> None:
    """Child process: export the fp32 U-Net into ``directory`` unless an earlier run did, and with ``int8`` its
    static int8 graph (``genrt.export.quantize``, calibrated on CALIBRATION_SEEDS sample inputs) into
    ``directory/unet-int8`` unless there already."""
    from genrt.export.folder import export_folder
    from genrt.export.quantize import quantize_int8
    from genrt.runtime.backends.base import numpy_dtype

    directory = Path(directory)
    if not (directory / "manifest.json").is_file():
        export_folder(_plan(config, resolution, batch), directory, components=["unet"])
    target = directory / INT8_GRAPH
    if int8 and not target.is_file():
        spec = _plan(config, resolution, batch).components["unet"]
        external = (directory / "unet" / "model.onnx.data").is_file()

        def feeds(seed: int) -> dict[str, np.ndarray]:
            sample = spec.sample_inputs("opt", seed=seed)
            return {t.name: sample[t.name].numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}

        partial = target.with_name("partial-" + target.name)  # renamed when complete: a stopped run redoes it
        quantize_int8(directory / "unet" / "model.onnx", partial, (feeds(seed) for seed in CALIBRATION_SEEDS),
                      external_data=external)
        if external:  # the graph names its weights file: keep that name, move the graph last
            partial.with_name(partial.name + ".data").rename(target.with_name(partial.name + ".data"))
        partial.rename(target)


def check_real_config() -> None:
    """The ``sd15`` preset's U-Net is the one the real config.json describes."""
    from genrt.sdk.ldm.config import get_config
    from genrt.sdk.ldm.diffusers_format import unet_config_from_diffusers

    real = unet_config_from_diffusers(json.loads(CONFIG.read_text()), CONFIG.parent)
    if real != get_config("sd15").unet:
        raise SystemExit(f"the sd15 preset's U-Net differs from {CONFIG}: {real} != {get_config('sd15').unet}")


def run(config: str, resolution: int, batch: int, threads: tuple[int, ...], warmup: int, repeats: int,
        compile: bool = True, int8: bool = False, export_dir: Path | None = None) -> dict:
    """``config``: "sd15" (checked against the real config.json) or a smaller ldm preset (tests); ``export_dir``:
    where the graphs go (reused by a later run; None: a temporary folder)."""
    if config == "sd15":
        check_real_config()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with contextlib.ExitStack() as stack:
        if export_dir is None:
            export_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genrt-sd15-unet-"))) / "export"
        child = multiprocessing.get_context("spawn").Process(target=_export,
                                                             args=(str(export_dir), config, resolution, batch, int8))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the U-Net export failed (exit code {child.exitcode})")
        graphs = {ORT: export_dir / "unet" / "model.onnx", **({ORT_INT8: export_dir / INT8_GRAPH} if int8 else {})}
        rows, parity, versus_best = time_contenders(_plan(config, resolution, batch).components["unet"], graphs,
                                                    threads, warmup, repeats, compile)
    return {"model": f"ldm {config} U-Net (random weights)", "resolution": resolution, "batch": batch,
            "threads": list(threads), "warmup": warmup, "repeats": repeats,
            "timing": "interleaved call by call (ABBA rounds), per thread count; median, p10, p90",
            "int8": f"static W8A8 QDQ (genrt.export.quantize), calibrated on seeds {list(CALIBRATION_SEEDS)}"
            if int8 else None,
            "load_average_at_start": load_at_start, "parity": parity, "ort_vs_best_torch": versus_best,
            "rows": rows, "peak_host_memory_mb": peak_host_memory_mb()}


def time_contenders(spec, graphs: dict[str, Path], threads: tuple[int, ...], warmup: int, repeats: int,
                    compile: bool) -> tuple[list[dict], dict, dict]:
    """(rows, parity, ONNX Runtime vs the best PyTorch option) per thread count; ``graphs``: contender -> graph."""
    from genrt.runtime.backends.base import numpy_dtype
    from genrt.runtime.backends.onnxruntime import open_session

    inputs = spec.sample_inputs("opt", seed=0)
    fp32 = spec.module().eval()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    bf16_inputs = cast_inputs(inputs, torch.bfloat16)
    compiled = torch.compile(fp32) if compile else None
    feeds = {t.name: inputs[t.name].numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}
    rows, parity, versus_best = [], {}, {}
    for count in threads:
        torch.set_num_threads(count)
        contenders = {"torch-eager-fp32": lambda: fp32(**inputs).float().numpy(),
                      "torch-eager-bf16": lambda: bf16(**bf16_inputs).float().numpy()}
        if compiled is not None:
            contenders["torch-compile-fp32"] = lambda: compiled(**inputs).float().numpy()
        for name, graph in graphs.items():
            session = open_session(str(graph), "cpu", threads=count)
            contenders[name] = lambda s=session: s.run(["model_output"], feeds)[0]
        outputs = {}  # the last output of each contender, for parity
        calls = {name: lambda name=name, fn=fn: outputs.__setitem__(name, fn()) for name, fn in contenders.items()}
        with torch.inference_mode():
            spreads = time_interleaved(calls, warmup=warmup, repeats=repeats)
        del contenders, calls
        reference = outputs["torch-eager-fp32"]
        scale = float(np.abs(reference).max())
        eager = spreads["torch-eager-fp32"].median_ms
        found = {name: {"threads": count, "backend": name, "median_ms": s.median_ms, "p10_ms": s.p10_ms,
                        "p90_ms": s.p90_ms, "runs": s.runs, "speedup_vs_eager_fp32": eager / s.median_ms,
                        "rel_error_vs_fp32": float(np.abs(outputs[name] - reference).max()) / scale}
                 for name, s in spreads.items()}
        rows += found.values()
        for name in graphs:
            error = found[name]["rel_error_vs_fp32"]
            parity[f"{name} t{count}"] = {"rel": error, "bound": BOUNDS[name], "passed": error < BOUNDS[name]}
        best = min((row for name, row in found.items() if name not in graphs), key=lambda row: row["median_ms"])
        versus_best[str(count)] = {"best_torch": best["backend"], **{
            f"{name}_vs_best_torch": best["median_ms"] / found[name]["median_ms"] for name in graphs}}
    return rows, parity, versus_best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sd15", help="ldm config (default: sd15, the real config)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2, help="U-Net batch (default 2: one image with guidance)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    parser.add_argument("--int8", action="store_true",
                        help="also time ONNX Runtime on the static int8 graph (small U-Nets: see the module docstring)")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where the graphs go, reused when an earlier run left them (default: a temporary folder)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    payload = run(args.config, args.resolution, args.batch, tuple(args.threads), args.warmup, args.repeats,
                  args.compile, args.int8, args.export_dir)
    table = markdown_table(payload["rows"], COLUMNS)
    print(table)
    name = f"cpu-unet-{args.config}-{args.resolution}"
    path = write_report(args.out, name, payload)
    write_text_atomic(path.with_suffix(".md"), table + "\n")
    for count, found in payload["ort_vs_best_torch"].items():
        ratios = ", ".join(f"{key.removesuffix('_vs_best_torch')} {value:.2f}x" for key, value in found.items()
                           if key != "best_torch")
        print(f"{count} thread(s), against the best PyTorch option ({found['best_torch']}): {ratios}")
    print(f"wrote {path}")
    return 0 if all(check["passed"] for check in payload["parity"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
