"""The real-size SD 1.5 U-Net on the CPU: ONNX Runtime fp32 and int8 against PyTorch's CPU options, in one run.

One U-Net call at 512x512 with guidance (batch 2: latents (2, 4, 64, 64), text (2, 77, 768)), random
weights on the real config (``tests/fixtures/sd15/unet/config.json``, checked equal to the ``sd15``
preset the export uses). The graph is exported in a child process (fp32 export peaks near 14.5 GB; the
child returns that memory before the timing starts), with its static int8 graph (``genrt.export.quantize``,
calibrated on other sample inputs than the timed one; ``--no-int8`` leaves it out), and opened as the runtime opens
a CPU session (``open_session``). ``--export-dir`` keeps the graphs for a later run (a stopped run resumes without exporting
again). Contenders: PyTorch eager fp32, eager bf16, ``torch.compile`` (inductor, fp32; it compiles again for
each thread count), ONNX Runtime fp32 (and int8) on its own CPU kernels, and with ``--openvino-python`` the int8
graph on ONNX Runtime's OpenVINO execution provider (``OrtOptions(cpu_provider="openvino",
openvino_precision="bf16")``: the quantised nodes in int8, the rest in bf16, where AMX or AVX512-BF16 make both
fast), interleaved call by call (``benchmarks.compare_backends.time_interleaved``), once per thread count
(``--threads 1 2``: torch and ONNX Runtime alike); the report is written after each thread count, so a stopped run
keeps the counts it finished. Eager bf16 runs in a child process holding only the bf16 weights
(``benchmarks.child_module``: built there and converted in place, called over a pipe between the other
contenders), so the timing process never holds a second copy of the network; OpenVINO runs in a process of the
interpreter given (``benchmarks.child_session``: onnxruntime-openvino cannot share the timing process's onnxruntime).
``ort_vs_best_torch`` gives the fastest PyTorch option's median over each ONNX Runtime graph's.
Parity: each contender against eager fp32 on the same input, relative error max|x - torch| / max|torch|; ONNX
Runtime fp32 and int8 within genrt parity's bounds for their precisions (``TOLERANCES``).

Needs about 20 GB of free memory in all (measured at 512 px, U-Net batch 2: the timing process 13.5 GB with both
ONNX Runtime sessions, the bf16 child 3.5 GB, the OpenVINO child 2.5 GB; ``*peak_host_memory_mb`` in the report),
a minute per round on a 2-core machine; keep ``--repeats`` small.

    python -m benchmarks.cpu_sd15_unet --threads 1 2 --repeats 3 --export-dir /tmp/sd15-unet \
        --openvino-python .venv-openvino/bin/python --out benchmarks/results
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from benchmarks.child_module import ChildModule
from benchmarks.child_session import ChildSession
from benchmarks.compare_backends import time_interleaved
from genrt.export.parity import TOLERANCES
from genrt.fileio import write_text_atomic
from genrt.runtime.backends.ort_options import OrtOptions
from genrt.runtime.timing import markdown_table, peak_host_memory_mb, write_report

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sd15" / "unet" / "config.json"
INT8_GRAPH = "unet-int8/model.onnx"
CALIBRATION_SEEDS = (1, 2, 3, 4)  # sample inputs the int8 activation ranges come from (the timed input is seed 0)
COLUMNS = ("threads", "backend", "median_ms", "p10_ms", "p90_ms", "runs", "speedup_vs_eager_fp32",
           "rel_error_vs_fp32")
ORT = "onnxruntime-cpu-fp32"
ORT_INT8 = "onnxruntime-cpu-int8"
OPENVINO_INT8 = "onnxruntime-openvino-int8"  # the int8 graph on OpenVINO's provider, float32 parts in bf16
OPENVINO_OPTIONS = OrtOptions(cpu_provider="openvino", openvino_precision="bf16")
BOUNDS = {ORT: TOLERANCES["fp32"], ORT_INT8: TOLERANCES["int8"], OPENVINO_INT8: TOLERANCES["int8"]}  # genrt parity's


def _options(resolution: int, batch: int):
    """Export options whose U-Net takes ``batch`` rows: ``batch // 2`` images, each with its [uncond; cond] pair."""
    from genrt.export.options import ExportOptions, Range

    images = batch // 2
    return ExportOptions(batch=Range(images, images, images), resolution=Range(resolution, resolution, resolution),
                         random_weights=True, seed=0)


def _plan(config: str, resolution: int, batch: int):
    from genrt.export.families import family_plan

    return family_plan("ldm", config, "fp32", _options(resolution, batch))


def _unet(config: str, resolution: int, batch: int) -> torch.nn.Module:
    """The float32 U-Net of the plan (random weights from the export seed: the same in every process)."""
    return _plan(config, resolution, batch).components["unet"].module()


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
        compile: bool = True, int8: bool = True, export_dir: Path | None = None, bf16: bool = True,
        openvino_python: str | None = None, report: Callable[[dict], None] = lambda payload: None) -> dict:
    """``config``: "sd15" (checked against the real config.json) or a smaller ldm preset (tests); ``export_dir``:
    where the graphs go (reused by a later run; None: a temporary folder); ``openvino_python``: an interpreter with
    onnxruntime-openvino and genrt, which runs the int8 graph on OpenVINO's provider (None: left out; needs
    ``int8``); ``report`` is called with the payload so far after each thread count."""
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
        spec = _plan(config, resolution, batch).components["unet"]
        children = {}  # contender -> ChildModule / ChildSession, each in its own process
        inputs = {name: tensor.numpy() for name, tensor in spec.sample_inputs("opt", seed=0).items()}
        if bf16:  # before the parent builds its network: the child's float32 build peaks alone
            children["torch-eager-bf16"] = stack.enter_context(ChildModule(
                functools.partial(_unet, config, resolution, batch), torch.bfloat16, inputs))
        if openvino_python is not None and int8:
            children[OPENVINO_INT8] = stack.enter_context(ChildSession(
                openvino_python, graphs[ORT_INT8], OPENVINO_OPTIONS, _feeds(spec, inputs), "model_output"))
        payload = {"model": f"ldm {config} U-Net (random weights)", "resolution": resolution, "batch": batch,
                   "threads": list(threads), "warmup": warmup, "repeats": repeats,
                   "timing": "interleaved call by call (ABBA rounds), per thread count; median, p10, p90",
                   "int8": f"static W8A8 QDQ (genrt.export.quantize), calibrated on seeds {list(CALIBRATION_SEEDS)}"
                   if int8 else None, "eager_bf16": bf16, "torch_compile": compile,
                   "openvino": f"{OPENVINO_INT8}: {OPENVINO_OPTIONS}" if OPENVINO_INT8 in children else None,
                   "load_average_at_start": load_at_start}
        for rows, parity, versus_best in time_contenders(spec, graphs, threads, warmup, repeats, compile, children):
            payload.update({"parity": parity, "ort_vs_best_torch": versus_best, "rows": rows,
                            "load_average_now": [round(x, 2) for x in os.getloadavg()],
                            "peak_host_memory_mb": peak_host_memory_mb(),
                            "child_peak_host_memory_mb": {name: child.peak_mb() for name, child in children.items()}})
            report(payload)
    return payload


def _feeds(spec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``inputs`` in the dtypes of the graph's inputs."""
    from genrt.runtime.backends.base import numpy_dtype

    return {t.name: inputs[t.name].astype(numpy_dtype(t.dtype)) for t in spec.inputs}


def time_contenders(spec, graphs: dict[str, Path], threads: tuple[int, ...], warmup: int, repeats: int,
                    compile: bool, children: dict) -> Iterator[tuple[list[dict], dict, dict]]:
    """(rows, parity, ONNX Runtime vs the best PyTorch option) of the thread counts timed so far, after each one;
    ``graphs``: contender -> graph opened here; ``children``: contender -> its child process (eager bf16, ONNX
    Runtime on OpenVINO), each with ``set_threads`` and a call."""
    from genrt.runtime.backends.onnxruntime import open_session

    inputs = spec.sample_inputs("opt", seed=0)
    fp32 = spec.module().eval()
    compiled = torch.compile(fp32) if compile else None
    feeds = _feeds(spec, {name: tensor.numpy() for name, tensor in inputs.items()})
    onnx_runtime = [*graphs, *(name for name in children if name.startswith("onnxruntime"))]
    rows, parity, versus_best = [], {}, {}
    for count in threads:
        torch.set_num_threads(count)
        contenders = {"torch-eager-fp32": lambda: fp32(**inputs).float().numpy()}
        for name, child in children.items():
            child.set_threads(count)
            contenders[name] = child
        if compiled is not None:
            contenders["torch-compile-fp32"] = lambda: compiled(**inputs).float().numpy()
        for name, graph in graphs.items():  # no name keeps a session past this count: its arena is GBs
            contenders[name] = lambda s=open_session(str(graph), "cpu", threads=count): s.run(["model_output"], feeds)[0]
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
        for name in onnx_runtime:
            error = found[name]["rel_error_vs_fp32"]
            parity[f"{name} t{count}"] = {"rel": error, "bound": BOUNDS[name], "passed": error < BOUNDS[name]}
        best = min((row for name, row in found.items() if name not in onnx_runtime), key=lambda row: row["median_ms"])
        versus_best[str(count)] = {"best_torch": best["backend"], **{
            f"{name}_vs_best_torch": best["median_ms"] / found[name]["median_ms"] for name in onnx_runtime}}
        yield rows, parity, versus_best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sd15", help="ldm config (default: sd15, the real config)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2,
                        help="U-Net batch, even: images with guidance x 2 (default 2: one image with guidance)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="leave eager bf16 (its child process) out")
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="leave ONNX Runtime on the static int8 graph out")
    parser.add_argument("--openvino-python", default=None, metavar="PYTHON",
                        help="an interpreter with onnxruntime-openvino and genrt (make openvino-env: "
                             ".venv-openvino/bin/python): adds the int8 graph on OpenVINO's provider")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where the graphs go, reused when an earlier run left them (default: a temporary folder)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        parser.error(f"--batch {args.batch}: the U-Net batch is two rows per image (uncond, cond); pass 2, 4, ...")
    name = f"cpu-unet-{args.config}-{args.resolution}-t" + "-".join(map(str, args.threads))  # one per thread set

    written: list[Path] = []  # the JSON report, each time it is written

    def report(payload: dict) -> None:
        written.append(write_report(args.out, name, payload))
        write_text_atomic(written[-1].with_suffix(".md"), markdown_table(payload["rows"], COLUMNS) + "\n")

    payload = run(args.config, args.resolution, args.batch, tuple(args.threads), args.warmup, args.repeats,
                  args.compile, args.int8, args.export_dir, args.bf16, args.openvino_python, report)
    print(markdown_table(payload["rows"], COLUMNS))
    for count, found in payload["ort_vs_best_torch"].items():
        ratios = ", ".join(f"{key.removesuffix('_vs_best_torch')} {value:.2f}x" for key, value in found.items()
                           if key != "best_torch")
        print(f"{count} thread(s), against the best PyTorch option ({found['best_torch']}): {ratios}")
    print(f"wrote {written[-1]}")
    return 0 if all(check["passed"] for check in payload["parity"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
