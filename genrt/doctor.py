"""``genrt doctor``: what this machine can run, and a seconds-long self-test of every backend found.

Reports the date, the GPU (driver, compute capability, the CUDA versions of the driver API and of cuda-python's
runtime, and the CUDA ONNX Runtime was built for), each backend library and its version, and what actually
runs: ONNX Runtime's providers as a session gets them (a CUDA session that silently fell back to the
CPU counts as unusable), the TensorRT flavours and their targets for this GPU, cuda-python. The library
probes run before anything imports torch, as in the torch-free runtime. How each GPU backend uses CUDA graphs
is reported with it (ONNX Runtime CUDA: whether a session takes ``enable_cuda_graph``; TensorRT: genrt's
capture of static engines; TensorRT-RTX: its runtime's own strategy). The self-test exports a tiny
latent-diffusion U-Net (random weights, fp32), checks each backend against PyTorch at the min, opt and max
shapes, and times the backend at the opt shape (host wall clock, outputs on the host); on ONNX Runtime CUDA
it runs the plain graph, then the graph fused by ``genrt build --trt onnxruntime-cuda``. Each result says what
the runner opened and how its calls used CUDA graphs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from genrt import __version__
from genrt.errors import GenrtError
from genrt.fileio import write_text_atomic

SELF_TEST_CALLS = 10  # timed calls per backend after one warm-up


@dataclass(frozen=True)
class Library:
    """One backend library: installed or not, its version, and what it can do on this machine."""

    name: str  # import name
    version: str | None  # None: not installed
    usable: bool  # it can run (or, for TensorRT-RTX without a GPU, build) here
    detail: str  # why not, or what it does here
    facts: dict = field(default_factory=dict)  # providers, targets, ...


@dataclass(frozen=True)
class Gpu:
    """GPU 0 as the driver reports it, or ``present=False``."""

    present: bool
    name: str | None = None
    compute_capability: str | None = None  # "major.minor"
    driver_version: str | None = None
    memory: str | None = None
    cuda_driver_api: int | None = None  # cudaDriverGetVersion, e.g. 13000 (needs cuda-python)
    cuda_runtime: int | None = None  # cudaRuntimeGetVersion of cuda-python's CUDA runtime, e.g. 13000


@dataclass(frozen=True)
class SelfTest:
    """Parity (vs PyTorch, worst of min/opt/max) and latency of the tiny U-Net on one backend."""

    backend: str  # "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", or "tensorrt_rtx build"
    passed: bool
    rel: float | None  # worst relative error; None where nothing ran
    tolerance: float | None
    median_ms: float | None  # per call at the opt shape (or build seconds * 1000 for a build)
    detail: str = ""


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Report:
    genrt: str
    python: str
    gpu: Gpu
    libraries: tuple[Library, ...]
    self_tests: tuple[SelfTest, ...]
    date: str = field(default_factory=utc_now)  # when the report was made, ISO 8601 UTC

    @property
    def ok(self) -> bool:
        return all(test.passed for test in self.self_tests)


def probe_gpu() -> Gpu:
    from genrt.runtime.backends.gpu import device_count

    smi = shutil.which("nvidia-smi")
    if device_count() == 0 or smi is None:
        return Gpu(present=False)
    query = "name,compute_cap,driver_version,memory.total"
    row = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=30).stdout.splitlines()[0]
    name, capability, driver, memory = (part.strip() for part in row.split(","))
    api = runtime = None
    try:
        import cuda.bindings.runtime as cudart

        error, api = cudart.cudaDriverGetVersion()
        error, runtime = cudart.cudaRuntimeGetVersion()
    except ImportError:
        pass
    return Gpu(True, name, capability, driver, memory, api, runtime)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _probe_model() -> bytes:
    """A one-node ONNX graph (y = x + x, float32 (2,)) to open a session with."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def probe_onnxruntime(gpu: Gpu) -> Library:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return Library("onnxruntime", None, False, "not installed (pip install 'genrt[cpu]' or 'genrt[gpu]')")
    from genrt.runtime.backends.onnxruntime import CUDA_PROVIDER, open_session

    compiled = ort.get_available_providers()
    facts = {"compiled_providers": compiled, "distribution": "onnxruntime-gpu" if _version("onnxruntime-gpu")
             else "onnxruntime"}
    build = importlib.import_module("onnxruntime.capi.build_and_package_info")
    if getattr(build, "cuda_version", None):  # GPU builds only
        facts["built_for_cuda"] = build.cuda_version
    if CUDA_PROVIDER not in compiled:
        return Library("onnxruntime", ort.__version__, True, "CPU only (no CUDA provider in this build)", facts)
    if not gpu.present:
        return Library("onnxruntime", ort.__version__, True, "CUDA provider compiled in, but no GPU: CPU only", facts)
    try:
        facts["cuda_session_providers"] = open_session(_probe_model(), "cuda").get_providers()
    except GenrtError as exc:
        return Library("onnxruntime", ort.__version__, True, f"CUDA unusable: {exc.one_line()}", facts)
    try:
        open_session(_probe_model(), "cuda", cuda_graph=True)
        facts["cuda_graphs"] = "CUDA sessions take enable_cuda_graph (captured per input shape, I/O bound)"
    except Exception as exc:  # ONNX Runtime's own exception types
        facts["cuda_graphs"] = f"refused: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return Library("onnxruntime", ort.__version__, True, "CUDA and CPU", facts)


def probe_tensorrt(module: str, gpu: Gpu) -> Library:
    from genrt.export.targets import RTX_COMPUTE_CAPABILITIES

    try:
        trt = importlib.import_module(module)
    except ImportError:
        extra = "trt" if module == "tensorrt" else "trt-rtx"
        return Library(module, None, False, f"not installed (pip install 'genrt[{extra}]')")
    if module == "tensorrt":
        if not gpu.present:
            return Library(module, trt.__version__, False, "installed, but builds and runs only on a GPU")
        return Library(module, trt.__version__, True, f"builds and runs engines for this GPU ({gpu.compute_capability})",
                       {"targets": [gpu.compute_capability],
                        "cuda_graphs": "genrt captures and replays engines built for one static shape"})
    targets = [cc for cc, member in RTX_COMPUTE_CAPABILITIES.items() if member in trt.ComputeCapability.__members__]
    facts = {"targets": targets, "cuda_graphs": "captured by TensorRT-RTX's runtime (cuda_graph_strategy "
             "WHOLE_GRAPH_CAPTURE, one graph per shape); genrt's own capture is off for its engines"
             if hasattr(trt, "CudaGraphStrategy") else "none: this TensorRT-RTX has no runtime CUDA-graph strategy"}
    if not gpu.present:
        return Library(module, trt.__version__, True, "builds engines without a GPU; no GPU here to run them", facts)
    if gpu.compute_capability not in targets:
        return Library(module, trt.__version__, False, f"cannot target this GPU (compute capability "
                       f"{gpu.compute_capability}): use tensorrt or onnxruntime-cuda", facts)
    return Library(module, trt.__version__, True, f"builds and runs engines for this GPU ({gpu.compute_capability})",
                   facts)


def probe_cuda_python() -> Library:
    version = _version("cuda-bindings") or _version("cuda-python")
    try:
        importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return Library("cuda.bindings", version, False, "not importable (pip install 'genrt[gpu]'; needs >= 12.6.1)")
    return Library("cuda.bindings", version, True, "device buffers for the TensorRT runner")


def probe_libraries(gpu: Gpu) -> tuple[Library, ...]:
    return (probe_onnxruntime(gpu), probe_tensorrt("tensorrt", gpu), probe_tensorrt("tensorrt_rtx", gpu),
            probe_cuda_python())


def _tiny_unet(directory: Path):
    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder
    from genrt.export.options import ExportOptions

    plan = family_plan("ldm", "tiny", "fp32", ExportOptions(random_weights=True, seed=0))
    plan = dataclasses.replace(plan, components={"unet": plan.components["unet"]})
    export_folder(plan, directory)
    return plan


def _latency_ms(directory: Path, plan, backend: str) -> tuple[float, str]:
    """Median ms per U-Net call at the opt shape, and what the runner opened and how it used CUDA graphs."""
    from genrt.manifest import read_manifest
    from genrt.runtime.backends import Runners
    from genrt.runtime.backends.base import numpy_dtype

    spec = plan.components["unet"]
    inputs = spec.sample_inputs("opt", seed=0)  # fp32 export: float32 and int32 tensors
    feeds = {t.name: inputs[t.name].numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}
    with Runners(read_manifest(directory), ["unet"], backend=backend) as runners:
        runners["unet"].infer(feeds)
        times = []
        for _ in range(SELF_TEST_CALLS):
            start = time.perf_counter()
            runners["unet"].infer(feeds)
            times.append(time.perf_counter() - start)
        opened = f"{runners['unet'].source}; CUDA graphs {runners['unet'].cuda_graphs}"
    return 1000 * statistics.median(times), opened


def _parity(directory: Path, plan, backend: str, label: str | None = None) -> SelfTest:
    """Parity and latency of the tiny U-Net on ``backend``, reported as ``label`` (default: the backend)."""
    from genrt.export.parity import check_parity
    from genrt.manifest import read_manifest

    try:
        rows = check_parity(read_manifest(directory), plan, backends=[backend])
        worst = max(rows, key=lambda row: row.rel / row.tolerance if row.tolerance else row.rel)
        median_ms, opened = _latency_ms(directory, plan, backend)
        return SelfTest(label or backend, all(row.passed for row in rows), worst.rel, worst.tolerance, median_ms,
                        opened)
    except GenrtError as exc:
        return SelfTest(label or backend, False, None, None, None, exc.one_line())


def _fused_test(directory: Path, plan) -> SelfTest:
    """The U-Net fused for ONNX Runtime CUDA (genrt build --trt onnxruntime-cuda), then its parity and latency."""
    from genrt.export.cuda_fusion import build_cuda_graphs

    label = "onnxruntime-cuda fused"
    try:
        build_cuda_graphs(directory, ["unet"])
    except GenrtError as exc:
        return SelfTest(label, False, None, None, None, exc.one_line())
    return _parity(directory, plan, "onnxruntime-cuda", label)


def self_test(gpu: Gpu, libraries: tuple[Library, ...]) -> tuple[SelfTest, ...]:
    """Export the tiny U-Net once, then parity + latency on every backend that runs here."""
    try:
        importlib.import_module("genrt.export")
    except ImportError as exc:
        return (SelfTest("export", False, None, None, None, f"genrt.export not importable ({exc}): "
                         "pip install 'genrt[export]'"),)
    found = {library.name: library for library in libraries}
    tests = []
    with tempfile.TemporaryDirectory(prefix="genrt-doctor-") as scratch:
        directory = Path(scratch) / "tiny-unet"
        plan = _tiny_unet(directory)
        tests.append(_parity(directory, plan, "onnxruntime-cpu"))
        if "cuda_session_providers" in found["onnxruntime"].facts:
            tests.append(_parity(directory, plan, "onnxruntime-cuda"))
            tests.append(_fused_test(directory, plan))
        for flavour in ("tensorrt", "tensorrt_rtx"):
            if found[flavour].usable:
                tests.append(_engine_test(directory, plan, flavour, gpu))
    return tuple(tests)


def _engine_test(directory: Path, plan, flavour: str, gpu: Gpu) -> SelfTest:
    """Build the tiny U-Net's engine; on a GPU the flavour targets, run parity and latency on it too."""
    from genrt.export.engine import BuildSettings, build_engines
    from genrt.export.targets import build_targets

    try:  # without a GPU one portable target shows the builder works, in a third of the time
        targets = build_targets(flavour, None, gpu.compute_capability)[:1]
        (built,) = build_engines(directory, BuildSettings(flavour=flavour, compute_capabilities=targets))
    except GenrtError as exc:
        return SelfTest(f"{flavour} build", False, None, None, None, exc.one_line())
    if not gpu.present:
        return SelfTest(f"{flavour} build", True, None, None, 1000 * built.seconds,
                        f"built for {', '.join(targets)} in {built.seconds:.1f} s; no GPU to run it")
    test = _parity(directory, plan, "tensorrt")
    return dataclasses.replace(test, detail=f"{flavour} engine for {targets[0]}: {test.detail}")


def diagnose(run_self_test: bool = True) -> Report:
    gpu = probe_gpu()
    libraries = probe_libraries(gpu)
    tests = self_test(gpu, libraries) if run_self_test else ()
    return Report(__version__, sys.version.split()[0], gpu, libraries, tests)


def format_report(report: Report) -> str:
    gpu = report.gpu
    lines = [f"genrt {report.genrt}, Python {report.python}, {report.date}"]
    if gpu.present:
        api = f", CUDA driver API {gpu.cuda_driver_api}" if gpu.cuda_driver_api else ""
        api += f", CUDA runtime {gpu.cuda_runtime} (cuda-python)" if gpu.cuda_runtime else ""
        lines.append(f"GPU: {gpu.name}, compute capability {gpu.compute_capability}, driver {gpu.driver_version}, "
                     f"{gpu.memory}{api}")
    else:
        lines.append("GPU: none (no NVIDIA driver or no visible device): CPU backends only")
    for library in report.libraries:
        facts = "".join(f"; {key}: {value if isinstance(value, str) else ', '.join(map(str, value))}"
                        for key, value in library.facts.items())
        lines.append(f"  {library.name:<14} {library.version or '-':<12} {library.detail}{facts}")
    if report.self_tests:
        lines.append("self-test (tiny ldm U-Net, fp32, vs PyTorch):")
    for test in report.self_tests:
        status = "ok  " if test.passed else "FAIL"
        parity = f"rel {test.rel:.2e} (bound {test.tolerance:g})" if test.rel is not None else ""
        latency = f"{test.median_ms:.2f} ms" if test.median_ms is not None and test.rel is not None else ""
        lines.append(f"  {status} {test.backend:<20} {parity:<28} {latency:<11} {test.detail}".rstrip())
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--no-self-test", action="store_true", help="only probe the machine and libraries")


def main(args: argparse.Namespace) -> int:
    report = diagnose(run_self_test=not args.no_self_test)
    document = json.dumps(dataclasses.asdict(report) | {"ok": report.ok}, indent=1)
    if args.json_out is not None:
        write_text_atomic(args.json_out, document + "\n")
    print(document if args.json else format_report(report))
    return 0 if report.ok else 1
