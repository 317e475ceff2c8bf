"""Adherence and latency of the shipped shapes models per backend, precision, sampler and step count.

For one family (``--family``): the shipped checkpoint (``benchmarks.shapes_models``) is exported in fp32 and
fp16; every contender draws one image per shapes caption (image ``i`` seed ``--seed + i``, one call each, so
the latency is one image at batch 1), ``genrt.adherence`` scores them. Contenders:
- the torch-free runtime on ONNX Runtime CPU, fp32: every sampler the family's runtime takes, over a step sweep;
- the same, fp16: the default sampler over the sweep;
- ONNX Runtime fp32 again for a family's ``guided`` samplers, at a guidance of their own (imagen: DDIM at guidance
  1, where the folders' guidance 4 washes DDIM's images out);
- the PyTorch eager reference (genrt.sdk, fp32) at the default sampler, at the default steps and a few below.
VQGAN draws its 64 codes one by one (no sampler, no steps): a single point per contender. Imagen sweeps the
base stage's steps with the super-resolution stage at its default, and the SR stage's steps with the base
stage at its default. The answer to "how few steps keep >= 90%" per series is the smallest swept count from
which every larger count scores >= 90%.

Output: ``benchmarks/results/adherence-FAMILY-cpu.{json,md,png}`` (table, and adherence against steps).
Rows done are kept in ``--work/rows.jsonl``, so a stopped run resumes where it stopped.

    nice -n 10 python -m benchmarks.adherence --family ldm --threads 1 --work /tmp/adherence-ldm
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.line_chart import line_chart_png
from benchmarks.shapes_models import MODELS, SHIPPED
from benchmarks.shapes_sampling import CaptionRun, runtime_generator, sample_captions
from genrt.fileio import write_text_atomic
from genrt.runtime.timing import markdown_table, write_report
from genrt.shapes import all_captions

TARGET = 0.9  # adherence a step count must keep
ORT = "onnxruntime-cpu"
EAGER = "pytorch-eager"


@dataclass(frozen=True)
class Contender:
    """One row of the table: how the 36 images were drawn."""

    backend: str  # ORT or EAGER
    precision: str  # fp32 or fp16
    sampler: str  # sampler name, or "" where the family has none (vqgan)
    steps: tuple[int, ...]  # steps per stage (ldm: one; imagen: base, SR); () for vqgan
    guidance: tuple[float, ...] = ()  # guidance scale per stage; () for the export's defaults

    @property
    def key(self) -> str:
        key = f"{self.backend}/{self.precision}/{self.sampler}/{'-'.join(map(str, self.steps))}"
        return key + (f"/guidance-{guidance_text(self.guidance, '-')}" if self.guidance else "")


def guidance_text(guidance, separator: str = "/") -> str:
    return separator.join(f"{scale:g}" for scale in guidance)


@dataclass(frozen=True)
class Sweep:
    """A family's contenders, built from its defaults."""

    samplers: tuple[str, ...]  # runtime samplers, the default first
    steps: tuple[int, ...]  # step counts swept (ldm: the only stage; imagen: the base stage)
    sr_steps: tuple[int, ...] = ()  # imagen: SR stage counts swept, base at its default
    eager_steps: tuple[int, ...] = ()  # counts of the eager reference besides the default
    guided: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (sampler, guidance per stage) swept once more


SWEEPS = {
    "ldm": Sweep(samplers=("ddim", "euler", "euler_ancestral", "ddpm"), steps=(2, 4, 8, 16, 32, 50), eager_steps=(8,)),
    "imagen": Sweep(samplers=("ddpm", "ddim"), steps=(2, 4, 8, 16, 25), sr_steps=(1, 2, 4, 8),
                    guided=(("ddim", (1.0, 1.0)),)),
    "vqgan": Sweep(samplers=(), steps=()),
}


def contenders(family: str, default_steps: tuple[int, ...]) -> list[Contender]:
    """Every contender of ``family`` in run order, most wanted first: the default sampler's fp32 sweep, the eager
    reference at the defaults, fp16, the other samplers, the guided ones."""
    sweep = SWEEPS[family]
    if family == "vqgan":
        return [Contender(ORT, "fp32", "", ()), Contender(ORT, "fp16", "", ()), Contender(EAGER, "fp32", "", ())]
    if family == "ldm":
        grid = [(s,) for s in sweep.steps]
    else:  # imagen: the base sweep at the default SR steps, then the SR sweep at the default base steps
        grid = [(s, default_steps[1]) for s in sweep.steps] + [(default_steps[0], s) for s in sweep.sr_steps]
    default = sweep.samplers[0]
    rows = [Contender(ORT, "fp32", default, steps) for steps in grid]
    rows += [Contender(EAGER, "fp32", default, tuple(default_steps))]
    rows += [Contender(ORT, "fp16", default, steps) for steps in grid]
    rows += [Contender(ORT, "fp32", sampler, steps) for sampler in sweep.samplers[1:] for steps in grid]
    rows += [Contender(EAGER, "fp32", default, (s,) + tuple(default_steps[1:])) for s in sweep.eager_steps]
    rows += [Contender(ORT, "fp32", sampler, steps, guidance) for sampler, guidance in sweep.guided for steps in grid]
    return list(dict.fromkeys(rows))  # imagen's default point is in both sweeps: once


def export(family: str, precision: str, models: Path, work: Path) -> Path:
    """`genrt export` of the shipped model into ``work/FAMILY-PRECISION`` (reused when complete)."""
    from genrt.cli import main as genrt

    out = work / f"{family}-{precision}"
    if not (out / "manifest.json").is_file():
        code = genrt(["export", family, *SHIPPED[family].export_arguments(models), "--precision", precision,
                      "--out", str(out), "--force"])
        if code != 0:
            raise SystemExit(f"adherence: export of {family} {precision} failed with exit code {code}")
    return out


def eager_generator(family: str, models: Path, runtime_pipe, contender: Contender) -> Callable[[str, int], np.ndarray]:
    """``generate(caption, seed)`` of the PyTorch reference (genrt.sdk, fp32) at the runtime's defaults."""
    import torch

    torch.set_grad_enabled(False)
    checkpoint = models / SHIPPED[family].checkpoint
    if family == "ldm":
        from genrt.sdk.ldm.checkpoint import load_pipeline_folder
        from genrt.sdk.ldm.pipeline import StableDiffusionReference

        reference = StableDiffusionReference(load_pipeline_folder(checkpoint), sampler=contender.sampler)
        return lambda caption, seed: reference([caption], num_inference_steps=contender.steps[0],
                                               guidance_scale=runtime_pipe.default_guidance, seed=seed).images[0]
    if family == "vqgan":
        from genrt.sdk.vqgan.checkpoint import load_taming_prior, load_taming_vqgan

        vqgan, prior, options = load_taming_vqgan(checkpoint, "shapes"), load_taming_prior(checkpoint, "shapes"), \
            runtime_pipe.defaults
        names = list(all_captions())

        def vqgan_image(caption: str, seed: int) -> np.ndarray:
            codes = prior.sample(torch.tensor([[names.index(caption)]]), 64, generator=torch.Generator().manual_seed(seed),
                                 **options)
            image = vqgan.decode_indices(codes.reshape(1, 8, 8))[0]
            return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()

        return vqgan_image
    from genrt.sdk.imagen.if_cascade import IFCascadeReference, to_uint8

    reference = IFCascadeReference(checkpoint, models / "imagen-shapes" / "stage_II")
    noise_level = runtime_pipe.noise_level
    return lambda caption, seed: to_uint8(reference([caption], contender.steps, runtime_pipe.default_guidance,
                                                    np.random.default_rng(seed), noise_level=noise_level)[-1])[0]


def run_contender(family: str, contender: Contender, exports: dict[str, Path], models: Path, threads: int,
                  seed: int) -> CaptionRun:
    import genrt.runtime

    sampler = contender.sampler or None
    with genrt.runtime.load(exports[contender.precision], backend=ORT, threads=threads, sampler=sampler) as pipe:
        if contender.backend == EAGER:
            generate = eager_generator(family, models, pipe, contender)
        else:
            options = {}
            if contender.steps:
                steps = list(contender.steps)
                options["num_inference_steps"] = steps if len(steps) > 1 else steps[0]
            if contender.guidance:
                options["guidance_scale"] = list(contender.guidance)
            generate = runtime_generator(pipe, **options)
        return sample_captions(generate, all_captions(), seed)


def row(contender: Contender, run: CaptionRun) -> dict:
    result = run.score
    return {**asdict(contender), "steps": list(contender.steps), "guidance": list(contender.guidance),
            "key": contender.key, "adherence": result.rate,
            "adherent": result.adherent, "total": result.total, "colour": result.colour, "shape": result.shape,
            "background": result.background, "median_ms": 1000 * run.median_seconds,
            "p90_ms": 1000 * float(np.percentile(run.seconds, 90))}


def series_name(row: dict, family: str, default_steps: tuple[int, ...]) -> tuple[str, float] | None:
    """(series, x) of a swept row: which line of the chart it belongs to and its step count."""
    label = f"{row['backend']} {row['precision']}" + (f" {row['sampler']}" if row["sampler"] else "")
    if row.get("guidance"):  # rows of runs before the guided sweep have no key
        label += f" guidance {guidance_text(row['guidance'])}"
    steps = row["steps"]
    if family == "imagen":
        if steps[1] == default_steps[1]:
            return f"{label}, base steps (SR {steps[1]})", steps[0]
        return f"{label}, SR steps (base {steps[0]})", steps[1]
    return (label, steps[0]) if steps else None


def fewest_steps(points: list[tuple[float, float]]) -> float | None:
    """The smallest swept count from which every larger count keeps adherence >= TARGET (None: none does)."""
    answer = None
    for steps, rate in sorted(points, reverse=True):
        if rate < TARGET:
            break
        answer = steps
    return answer


def report(family: str, rows: list[dict], default_steps: tuple[int, ...], seed: int, out: Path) -> Path:
    """JSON (rows, answers), Markdown table and the chart of ``family``."""
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in rows:
        named = series_name(entry, family, default_steps)
        if named is not None:
            series.setdefault(named[0], []).append((named[1], entry["adherence"]))
    answers = {name: fewest_steps(points) for name, points in series.items() if len(points) > 1}
    name = f"adherence-{family}-cpu"
    payload = {"family": family, "seed": seed, "captions": len(all_captions()), "default_steps": list(default_steps),
               "target": TARGET, "fewest_steps_keeping_target": answers, "rows": rows}
    path = write_report(out, name, payload)
    columns = ["backend", "precision", "sampler", "steps", "guidance", "adherent", "colour", "shape", "background",
               "median_ms", "p90_ms"]
    table = markdown_table([{**r, "steps": "/".join(map(str, r["steps"])), "adherent": f"{r['adherent']}/{r['total']}",
                             "guidance": guidance_text(r.get("guidance") or []) or "default"} for r in rows], columns)
    lines = [f"fewest steps keeping >= {TARGET:.0%}: " + ", ".join(f"{k}: {v}" for k, v in answers.items())] \
        if answers else []
    write_text_atomic(out / f"{name}.md", table + "\n\n" + "\n".join(lines) + "\n")
    swept = {k: v for k, v in series.items() if len(v) > 1}
    if swept:
        line_chart_png(out / f"{name}.png", swept, f"{family}: adherence over the 36 captions (seed {seed}), 1 image each",
                       "steps", "adhere", threshold=TARGET)
    print(table + "\n\n" + "\n".join(lines), flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=list(SHIPPED))
    parser.add_argument("--models", type=Path, default=MODELS, help="folder of the shipped models (default: models/)")
    parser.add_argument("--work", type=Path, required=True, help="exports and rows.jsonl (resumed when present)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime and torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    exports = {precision: export(args.family, precision, args.models, args.work) for precision in ("fp32", "fp16")}
    import genrt.runtime

    with genrt.runtime.load(exports["fp32"], backend=ORT) as pipe:
        default_steps = tuple(np.atleast_1d(pipe.default_steps).tolist()) if args.family != "vqgan" else ()
    progress = args.work / "rows.jsonl"
    done = {json.loads(line)["key"]: json.loads(line) for line in progress.read_text().splitlines()} \
        if progress.is_file() else {}
    rows = []
    for contender in contenders(args.family, default_steps):
        if contender.key not in done:
            done[contender.key] = row(contender, run_contender(args.family, contender, exports, args.models,
                                                               args.threads, args.seed))
            with progress.open("a") as file:
                file.write(json.dumps(done[contender.key]) + "\n")
            print(f"{contender.key}: {done[contender.key]['adherent']}/36, "
                  f"{done[contender.key]['median_ms']:.0f} ms per image", flush=True)
        rows.append(done[contender.key])
        report(args.family, rows, default_steps, args.seed, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
