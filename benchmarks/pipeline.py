"""One whole pipeline call (prompt -> image) on every backend of this machine, in one run, as ratios to
PyTorch eager float32.

The same work everywhere: the same family/config, batch, resolution, steps, prompt and seed, through

- the PyTorch reference pipelines (``StableDiffusionReference``; ``GPTPrior.sample`` + the VQGAN decoder;
  the ``Cascade`` stages after the T5 encoder) in eager float32, eager half precision (fp16 on a GPU,
  bf16 on a CPU) and, with ``--compile``, with the denoiser(s) under ``torch.compile`` (half on a GPU,
  float32 on a CPU);
- the torch-free runtime (``genrt.runtime.load``) on every backend available: ONNX Runtime CPU, or on
  a GPU ONNX Runtime CUDA (rows ``onnxruntime-cuda``, plain graphs without CUDA graphs, and
  ``onnxruntime-cuda+graphs`` with them; with ``--fusions`` also ``onnxruntime-cuda+fused`` and
  ``onnxruntime-cuda+fused+graphs`` on the graphs ``genrt build --trt onnxruntime-cuda`` writes) and, with
  ``--engines``, TensorRT (engines built here with the flavour that serves this GPU: standard TensorRT where
  installed, else TensorRT-RTX where it targets the GPU; checked before any timing; CUDA graphs as the
  runner uses them). Each runtime report says what every runner opened and how its calls used CUDA graphs.
  The graphs are exported in fp16 on a GPU and fp32 on a CPU (where ONNX Runtime has no fast fp16).

Ratios come from one process with every contender open at once, their whole pipeline calls interleaved
(one call each per round, the order reversed every other round: ABBA, 20 ms apart), so load drift on a
shared machine reaches them alike: they hold even when absolute times do not.

Weights: random, from one seed. ``genrt.export.weights.Weights`` seeds every network from the seed and
its name, so the PyTorch side (built from a float32 plan) and the exported graphs (built from a plan in
the export precision) hold the same weights. Classifier-free guidance is on (the family's scale).

Table rows, per backend: the pipeline's stages (the runtime's ``result.timings``; for PyTorch the
driver's stages where it has them: vqgan prior/decoder, imagen tokenize/T5/each U-Net stage),
``[engine] X`` = seconds inside component X's calls per pipeline call (the ONNX Runtime session or
TensorRT engine; for PyTorch the ``nn.Module``, timed by forward hooks that synchronise CUDA), and
``pipeline total``. ``speedup_vs_eager_fp32`` = eager float32's median / the row's median, for rows
that eager float32 also has; ``speedup_vs_eager_half`` likewise against eager half precision (fp16 on
a GPU, bf16 on a CPU). Overhead = wall time minus the time inside components, in % of wall time
(the runtime's: scheduler math, guidance, tokenisation, casts and copies; PyTorch's: the same in torch).

    python -m benchmarks.pipeline --family ldm --config sd15 --resolution 512 --steps 50 --compile --engines
    python -m benchmarks.pipeline --family ldm --config tiny --device cpu --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Generator

import torch
from torch import nn

from benchmarks.compare_backends import PAUSE_S, runtime_backends
from benchmarks.torch_timing import SHORT_DTYPE_NAMES
from genrt.errors import InputError
from genrt.families import FAMILIES
from genrt.families import family as lookup_family
from genrt.runtime.timing import markdown_table, peak_host_memory_mb, summarize, write_report

COLUMNS = ("backend", "stage", "calls/run", "median_ms", "p90_ms", "p99_ms", "share_%", "speedup_vs_eager_fp32",
           "speedup_vs_eager_half")
EAGER_FP32 = "torch-eager-fp32"
TOTAL = "pipeline total"
PROMPT = "a photograph of an astronaut riding a horse"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One pipeline call, the same on every backend."""

    family: str  # "ldm", "vqgan" or "imagen"
    config: str  # config name of the family's registry
    batch: int  # prompts (images) per call
    resolution: int | None  # output height = width in pixels (ldm, vqgan); None for imagen's fixed stages
    steps: int  # denoising steps per stage (ldm, imagen); codes sampled per image (vqgan)
    stages: int  # cascade stages run (imagen; 1 for the other families)
    seed: int = 0  # seed of the noise (weights use the export seed, 0)


class ModuleClock:
    """Seconds and calls inside watched modules (forward hooks) and inside named driver stages.

    On CUDA every boundary synchronises, so asynchronous kernels are charged to the module that
    launched them, as the runtime's runners are charged for theirs.
    """

    def __init__(self, device: torch.device):
        self.sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.module_seconds: dict[str, float] = {}
        self.module_calls: dict[str, int] = {}
        self.stage_seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._handles = []

    def watch(self, module: nn.Module, name: str) -> None:
        def before(_module, _args):
            self.sync()
            self._started[name] = time.perf_counter()

        def after(_module, _args, _output):
            self.sync()
            self.module_seconds[name] += time.perf_counter() - self._started[name]
            self.module_calls[name] += 1

        self.module_seconds[name], self.module_calls[name] = 0.0, 0
        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    @contextlib.contextmanager
    def stage(self, name: str):
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    def reset(self) -> None:
        self.module_seconds = dict.fromkeys(self.module_seconds, 0.0)
        self.module_calls = dict.fromkeys(self.module_calls, 0)
        self.stage_seconds = {}

    def close(self) -> None:
        """Remove the hooks (the modules may be timed again by another clock)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


# -- the PyTorch reference pipelines -----------------------------------------------------------------

def torch_networks(family: str, plan, names: list[str]) -> dict[str, nn.Module]:
    """The float32 sdk networks behind the plan's components ``names`` (the component wrappers unwrapped)."""
    attribute = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae", "decoder": "vqgan",
                 "prior": "prior", "t5_encoder": "encoder"}
    return {name: getattr(plan.components[name].module(), attribute.get(name, "unet")) for name in names}


def _ldm_call(networks: dict, work: Workload, clock: ModuleClock, tokenizer_dir: Path, device: torch.device):
    from transformers import PreTrainedTokenizerFast

    from genrt.sdk.ldm.config import get_config
    from genrt.sdk.ldm.model import LatentDiffusion
    from genrt.sdk.ldm.pipeline import StableDiffusionReference

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"), pad_token="<pad>")
    model = LatentDiffusion(get_config(work.config), tokenizer, unet=networks["unet"], vae=networks["vae_decoder"],
                            text_encoder=networks["text_encoder"])
    clock.watch(model.text_encoder, "text_encoder")
    clock.watch(model.unet, "unet")
    clock.watch(model.vae.decoder, "vae_decoder")
    pipe = StableDiffusionReference(model, "ddim")  # the runtime's default sampler
    prompts = [PROMPT] * work.batch
    return lambda: pipe(prompts, num_inference_steps=work.steps, height=work.resolution, width=work.resolution,
                        seed=work.seed)


def _vqgan_call(networks: dict, work: Workload, clock: ModuleClock, tokenizer_dir: Path, device: torch.device):
    vqgan, prior = networks["decoder"], networks["prior"]
    clock.watch(prior, "prior")
    clock.watch(vqgan.decoder, "decoder")
    side = work.resolution // vqgan.config.downsample_factor
    condition = torch.zeros((work.batch, prior.config.n_condition_tokens), dtype=torch.long, device=device)

    def call():
        generator = torch.Generator(device=device).manual_seed(work.seed)
        with clock.stage("prior"):
            codes = prior.sample(condition, side * side, generator=generator)  # (B, h*w)
        with clock.stage("decoder"):
            return vqgan.decode_indices(codes.reshape(work.batch, side, side))

    return call


def _imagen_call(networks: dict, work: Workload, clock: ModuleClock, tokenizer_dir: Path, device: torch.device):
    from genrt.export.imagen import STAGE_COMPONENTS, TEXT_ENCODER_OF
    from genrt.runtime.tokenizer import PromptTokenizer
    from genrt.sdk.imagen.cascade import Cascade, draw_noise
    from genrt.sdk.imagen.config import cascade_config, text_encoder_config

    full = cascade_config(work.config)
    config = dataclasses.replace(full, super_resolution=full.super_resolution[:work.stages - 1],
                                 resolutions=full.resolutions[:work.stages],
                                 guidance_scales=full.guidance_scales[:work.stages])
    names = STAGE_COMPONENTS[:work.stages]
    cascade = Cascade(config, networks[names[0]], [networks[name] for name in names[1:]])
    encoder = networks["t5_encoder"]
    clock.watch(encoder, "t5_encoder")
    for name in names:
        clock.watch(networks[name], name)
    tokenizer = PromptTokenizer(tokenizer_dir, max_length=text_encoder_config(TEXT_ENCODER_OF[work.config]).max_length)
    dtype = next(cascade.parameters()).dtype
    texts = [""] * work.batch + [PROMPT] * work.batch  # [uncond; cond], as the runtime encodes them

    def call():
        with clock.stage("tokenize"):
            tokens = tokenizer(texts)
        ids = torch.from_numpy(tokens.input_ids).long().to(device)
        mask = torch.from_numpy(tokens.attention_mask).long().to(device)
        with clock.stage("t5_encoder"):
            text = encoder(ids, mask).to(dtype)  # (2B, T, D)
        generator = torch.Generator(device=device).manual_seed(work.seed)
        noise = draw_noise(config, work.batch, [work.steps] * work.stages, generator, dtype)
        images = None
        for stage, name in enumerate(names):
            with clock.stage(name):
                images = cascade.sample_stage(stage, text, mask, noise[stage], images)
        return images

    return call


TORCH_CALLS = {"ldm": _ldm_call, "vqgan": _vqgan_call, "imagen": _imagen_call}


def torch_variants(family: str, networks: dict[str, nn.Module], device: torch.device, compile: bool):
    """Backend name -> networks: eager fp32, eager half (fp16 on a GPU, bf16 on a CPU) and, with ``compile``,
    the family's denoisers compiled (on the half networks on a GPU, the float32 ones on a CPU)."""
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    variants = {EAGER_FP32: networks,
                f"torch-eager-{SHORT_DTYPE_NAMES[half]}": {k: copy.deepcopy(v).to(half) for k, v in networks.items()}}
    if compile:
        base = variants[f"torch-eager-{SHORT_DTYPE_NAMES[half]}"] if device.type == "cuda" else networks
        compiled = dict(base)
        entry = lookup_family(family)
        for name in entry.denoisers:
            if name in compiled:
                module = copy.deepcopy(compiled[name])
                # the module's own __call__ stays eager, so the timing hooks run outside the compiled graph; an
                # autoregressive prior (no denoising steps) sees a longer sequence on every call
                module.forward = torch.compile(module.forward, dynamic=not entry.denoising)
                compiled[name] = module
        variants["torch-compile"] = compiled
    return variants


def torch_calls(call: Callable[[], object], clock: ModuleClock, *, warmup: int,
                repeats: int) -> Generator[None, None, dict]:
    """Like :func:`genrt.runtime.bench.pipeline_calls` for a PyTorch pipeline, one call per ``next()`` after the
    first; returns rows, total and overhead. Each call resets the clock first and reads it right after, so other
    contenders' calls in between (through modules two variants share) do not count."""
    yield
    for _ in range(warmup):
        with torch.inference_mode():
            call()
        clock.sync()
        yield
    wall, modules, stages = [], {}, {}
    for index in range(repeats):
        clock.reset()
        start = time.perf_counter()
        with torch.inference_mode():
            call()
        clock.sync()
        wall.append(time.perf_counter() - start)
        for name, seconds in clock.stage_seconds.items():
            stages.setdefault(name, []).append(seconds)
        for name, seconds in clock.module_seconds.items():
            modules.setdefault(name, []).append(seconds)
        if index < repeats - 1:
            yield
    return summarize(wall, stages, modules, clock.module_calls)


def interleave(contenders: dict[str, Generator[None, None, dict]], pause_s: float = PAUSE_S) -> dict[str, dict]:
    """Run call-by-call benchmarks (each already opened by a first ``next()``) round by round, one call each,
    in reversed order every other round (ABBA), ``pause_s`` apart (idle spinning threads sleep); their reports."""
    reports: dict[str, dict] = {}
    names = list(contenders)
    for round_index in itertools.count():
        for name in names if round_index % 2 == 0 else names[::-1]:
            if name in reports:
                continue
            time.sleep(pause_s)
            try:
                next(contenders[name])
            except StopIteration as finished:
                reports[name] = finished.value
                print(f"{name}: {reports[name]['total']['median_ms']:.1f} ms", flush=True)
        if len(reports) == len(names):
            return reports


# -- the runtime -------------------------------------------------------------------------------------

def runtime_call(work: Workload) -> Callable[[object], object]:
    """``generate(pipe)`` for :func:`genrt.runtime.bench.bench_pipeline`: the workload's call."""
    entry = lookup_family(work.family)
    if not entry.prompted:  # a prior sampling a square code grid
        def sample(pipe):
            side = work.resolution // pipe.manifest.settings.downsample_factor
            return pipe(None, batch_size=work.batch, grid=(side, side), seed=work.seed)
        return sample
    size = {"height": work.resolution, "width": work.resolution} if entry.free_size else {}
    stages = {"stages": work.stages} if entry.cascade else {}
    prompts = [PROMPT] * work.batch
    return lambda pipe: pipe(prompts, num_inference_steps=work.steps, seed=work.seed, **size, **stages)


# -- the run -----------------------------------------------------------------------------------------

def workload(args: argparse.Namespace, plan) -> Workload:
    """The call every backend makes, from the arguments and the family's defaults (validated)."""
    family, entry = args.family, lookup_family(args.family)
    if not entry.denoising and args.steps is not None:
        raise InputError(f"--steps does not apply to {family} (it samples one code per grid cell)",
                         fix="drop --steps; --resolution sets the grid")
    if not entry.cascade and args.stages is not None:
        cascades = " / ".join(name for name, other in FAMILIES.items() if other.cascade)
        raise InputError(f"--stages applies to the {cascades} cascade, not {family}", fix="drop --stages")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise InputError(f"--batch {args.batch} / --repeats {args.repeats} / --warmup {args.warmup}",
                         fix="use --batch >= 1, --repeats >= 1 and --warmup >= 0")
    stages = 1
    if entry.cascade:
        available = len(plan.settings.stages)
        stages = available if args.stages is None else args.stages
        if not 1 <= stages <= available:
            raise InputError(f"--stages {args.stages}", fix=f"use 1..{available} (base first)")
    resolution = None if entry.cascade else args.resolution or plan.settings.image_size
    if not entry.denoising:
        side = resolution // plan.settings.downsample_factor
        steps = side * side
    elif entry.cascade:
        steps = plan.settings.stages[0].num_steps if args.steps is None else args.steps
    else:
        steps = plan.settings.num_steps if args.steps is None else args.steps
    if steps < 1:
        raise InputError(f"--steps {args.steps}", fix="use --steps >= 1")
    return Workload(family, args.config, args.batch, resolution, steps, stages)


def export_options(args: argparse.Namespace):
    from genrt.export.options import ExportOptions, Range

    if lookup_family(args.family).cascade and args.resolution is not None:
        raise InputError(f"the {args.family} cascade runs at fixed resolutions", fix="drop --resolution; use --stages")
    resolution = None if args.resolution is None else Range(args.resolution, args.resolution, args.resolution)
    return ExportOptions(batch=Range(args.batch, args.batch, args.batch), resolution=resolution,
                         random_weights=True, seed=0)


def engine_settings():
    """How ``--engines`` builds on this GPU, or an InputError (before minutes of timing) where nothing serves it."""
    from genrt.errors import require
    from genrt.export.engine import FLAVOURS, BuildSettings
    from genrt.export.targets import build_targets, local_compute_capability, resolve_flavour

    local = local_compute_capability()
    flavour = resolve_flavour("auto", local)
    targets = build_targets(flavour, None, local)
    require(*FLAVOURS[flavour])
    return BuildSettings(flavour=flavour, compute_capabilities=targets)


def run(args: argparse.Namespace) -> dict:
    """Time every backend; returns the report payload (rows, per-backend summaries, workload)."""
    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder
    from genrt.runtime import load
    from genrt.runtime.bench import pipeline_calls

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but this torch build sees no CUDA GPU",
                         fix="install a CUDA build of torch on a GPU machine, or pass --device cpu")
    options = export_options(args)
    engines = engine_settings() if args.engines else None
    backends = [b for b in runtime_backends(device) if engines is not None or b != "tensorrt"]
    if not backends:  # before minutes of PyTorch timing with nothing to compare it to
        raise InputError("no genrt GPU backend is installed in this Python (onnxruntime-gpu, or TensorRT with "
                         "cuda-python)", fix="pip install 'genrt[gpu]', 'genrt[trt]' or 'genrt[trt-rtx]'")
    plan = family_plan(args.family, args.config, "fp32", options)
    work = workload(args, plan)
    names = lookup_family(args.family).generation_components(work.stages)
    precision = "fp16" if device.type == "cuda" else "fp32"
    threads = args.threads or torch.get_num_threads()  # torch and ONNX Runtime on the CPU get the same threads
    torch.set_num_threads(threads)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    contenders, backend_precision, clocks = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="genrt-pipeline-bench-") as scratch:
        scratch = Path(scratch)
        tokenizer_dir = scratch / "tokenizer"
        if plan.tokenizer is not None:
            plan.tokenizer.write_into(tokenizer_dir)
        # 1. export (fp16 on a GPU) and engines on request, so that every contender is open at once
        directory = scratch / "export"
        export_folder(family_plan(args.family, args.config, precision, options), directory, components=names)
        if engines is not None:
            from genrt.export.engine import build_engines

            build_engines(directory, engines)
        # 2. the PyTorch pipelines, then the runtime on every backend, each opened by its first next()
        networks = {k: v.to(device) for k, v in torch_networks(args.family, plan, names).items()}
        for backend, variant in torch_variants(args.family, networks, device, args.compile).items():
            clocks.append(ModuleClock(device))
            call = TORCH_CALLS[args.family](variant, work, clocks[-1], tokenizer_dir, device)
            contenders[backend] = torch_calls(call, clocks[-1], warmup=args.warmup, repeats=args.repeats)
            backend_precision[backend] = SHORT_DTYPE_NAMES[next(next(iter(variant.values())).parameters()).dtype]
            next(contenders[backend])
        for label, backend, cuda_graphs in runtime_variants(backends, directory, names, args.fusions):
            contenders[label] = pipeline_calls(
                lambda backend=backend, cuda_graphs=cuda_graphs: load(directory, backend, threads=threads,
                                                                      cuda_graphs=cuda_graphs),
                runtime_call(work), warmup=args.warmup, repeats=args.repeats)
            next(contenders[label])  # opened now: the fused graphs runtime_variants builds next are not its graphs
            backend_precision[label] = precision
        # 3. one call per contender per round
        reports = interleave(contenders)
        for clock in clocks:
            clock.close()
    return {**payload(work, device, reports, backend_precision, args), "threads": threads,
            "load_average_at_start": load_at_start}


def runtime_variants(backends: list[str], directory: Path, names: list[str], fusions: bool):
    """(row label, backend, cuda_graphs) per runtime run, in order; ONNX Runtime CUDA runs plain and with CUDA graphs,
    and with ``fusions`` again on the fused graphs, written (``build_cuda_graphs``) just before those runs."""
    for backend in backends:
        if backend != "onnxruntime-cuda":
            yield backend, backend, True
            continue
        yield backend, backend, False
        yield f"{backend}+graphs", backend, True
        if fusions:
            from genrt.export.cuda_fusion import COMPONENT_KINDS, build_cuda_graphs

            build_cuda_graphs(directory, [name for name in names if name in COMPONENT_KINDS])
            yield f"{backend}+fused", backend, False
            yield f"{backend}+fused+graphs", backend, True


def payload(work: Workload, device: torch.device, reports: dict, precisions: dict, args) -> dict:
    """The merged table (backend x stage, speed-ups to eager fp32 and to eager half precision: fp16 on a GPU,
    bf16 on a CPU) and a summary per backend."""
    half = next(backend for backend in reports if backend.startswith("torch-eager-") and backend != EAGER_FP32)
    eager, eager_half = ({row["stage"]: row["median_ms"] for row in reports[name]["rows"]}
                         for name in (EAGER_FP32, half))
    rows, summary = [], {}
    for backend, report in reports.items():
        for row in report["rows"]:
            reference, reference_half = eager.get(row["stage"]), eager_half.get(row["stage"])
            rows.append({"backend": backend, **row,
                         "speedup_vs_eager_fp32": None if reference is None else reference / row["median_ms"],
                         "speedup_vs_eager_half": None if reference_half is None
                         else reference_half / row["median_ms"]})
        median = report["total"]["median_ms"]
        summary[backend] = {"precision": precisions[backend], "total": report["total"],
                            "speedup_vs_eager_fp32": eager[TOTAL] / median,
                            "speedup_vs_eager_half": eager_half[TOTAL] / median,
                            "images_per_second": work.batch / (median / 1e3),
                            "overhead_percent": report["runtime_overhead_percent"]}
    runtime = {b: {k: v for k, v in r.items() if k not in ("rows", "total")}
               for b, r in reports.items() if "files" in r}
    return {"family": work.family, "config": work.config, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "workload": dataclasses.asdict(work), "guidance": "on (the family's scale)", "prompt": PROMPT,
            "warmup": args.warmup, "repeats": args.repeats, "compile": args.compile, "engines": args.engines,
            "fusions": args.fusions,
            "backends": summary, "rows": rows, "runtime_reports": runtime,
            "peak_host_memory_mb": peak_host_memory_mb()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=tuple(FAMILIES))
    parser.add_argument("--config", default="tiny", help="config name (default: tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps per stage (default: the manifest's, else 50; not for vqgan)")
    parser.add_argument("--stages", type=int, default=None, help="imagen: cascade stages to run (default: all)")
    parser.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the config's)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the denoiser(s)")
    parser.add_argument("--engines", action="store_true", help="also build and time TensorRT engines (GPU)")
    parser.add_argument("--fusions", action="store_true",
                        help="also time ONNX Runtime CUDA on the fused graphs (genrt build --trt onnxruntime-cuda)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of torch and ONNX Runtime alike (default 0: as many as torch uses)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per backend first (default: 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per backend (default: 10)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    work = report["workload"]
    print(f"\n{work['family']} / {work['config']} on {report['device']}: batch {work['batch']}, resolution "
          f"{work['resolution']}, steps {work['steps']}, stages {work['stages']}; {args.repeats} runs after "
          f"{args.warmup} warm-up\n")
    print(markdown_table(report["rows"], COLUMNS))
    for backend, summary in report["backends"].items():
        print(f"{backend} ({summary['precision']}): {summary['speedup_vs_eager_fp32']:.2f}x eager fp32, "
              f"{summary['speedup_vs_eager_half']:.2f}x eager half, "
              f"overhead {summary['overhead_percent']['median']:.1f}% of wall time")
    name = f"pipeline-{args.family}-{args.config}-{report['device'].split(':')[0]}"
    if report["device"] == "cpu":  # one report per thread count
        name += f"-t{report['threads']}"
    backends = list(report["backends"])
    chart = (backends, [report["backends"][b]["speedup_vs_eager_fp32"] for b in backends],
             f"{name}: whole-pipeline speed-up vs PyTorch eager fp32 (higher is faster)")
    print(f"wrote {write_report(args.out, name, report, chart)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
