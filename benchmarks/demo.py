"""``make demo``: the shipped shapes models (issue 15) through the whole genrt workflow, one family after another.

For each family, through the ``genrt`` command line as a user types it: export the checkpoint shipped in
``models/`` (``--checkpoint``, fp32), check every graph against PyTorch (``genrt parity``), build TensorRT-RTX
engines for SM86 (this works without a GPU; where it cannot run, the demo says so and goes on). Then the
torch-free runtime, on the best backend of this machine (``backend="auto"``), draws one image for each of the
36 shapes captions at the model's default sampler and steps (image ``i`` with seed ``--seed + i``), and
``genrt.adherence`` scores them. Written to ``--out``: ``FAMILY/`` (the export), ``FAMILY-sheet.png`` (each
image under its caption, framed green where it adheres, red where not) and ``adherence.json``; a table of the
scores and of the seconds each step took is printed at the end.

    python -m benchmarks.demo --out out/demo [--families ldm vqgan imagen] [--models models] [--seed 0]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.contact_sheet import contact_sheet, write_png
from benchmarks.shapes_models import MODELS, SHIPPED
from benchmarks.shapes_sampling import runtime_generator, sample_captions
from genrt.errors import GenrtError
from genrt.runtime.timing import markdown_table, write_report
from genrt.shapes import all_captions

BUILD = ["--trt", "tensorrt_rtx", "--compute-capability", "8.6"]  # engines for SM86 GPUs, built on any machine


def step(argv: list[str]) -> tuple[int, float]:
    """Run one ``genrt`` command in its own process, as a user would: (exit code, seconds)."""
    print(f"\n$ genrt {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "genrt.cli", *argv]).returncode
    return code, time.perf_counter() - start


def required(argv: list[str]) -> float:
    """``step`` that stops the demo on failure; its seconds."""
    code, seconds = step(argv)
    if code != 0:
        raise SystemExit(f"demo: `genrt {shlex.join(argv)}` failed with exit code {code}")
    return seconds


@dataclass(frozen=True)
class DemoSettings:
    """What one demo run does."""

    out: Path  # output folder
    models: Path  # folder of the shipped checkpoints (SHIPPED paths inside it)
    captions: tuple[str, ...]  # prompts, one image each
    seed: int  # seed of the first image; image i uses seed + i
    backend: str  # runtime backend ("auto": the fastest this machine runs)
    threads: int  # ONNX Runtime CPU threads (0: its default)


def demo_family(family: str, settings: DemoSettings) -> dict:
    """Export, parity, build, generate, score and draw the sheet of one family; its row of the report."""
    import genrt.runtime

    export_dir = settings.out / family
    seconds = {"export": required(["export", family, *SHIPPED[family].export_arguments(settings.models),
                                   "--out", str(export_dir), "--force"])}
    seconds["parity"] = required(["parity", str(export_dir)])
    code, seconds["build"] = step(["build", str(export_dir), *BUILD])
    build = "tensorrt_rtx sm86" if code == 0 else f"could not run here (exit {code}; see above)"
    if code != 0:
        print(f"demo: the TensorRT-RTX build of {family} could not run here (exit code {code}); "
              "the runtime runs the ONNX graphs", flush=True)
    start = time.perf_counter()
    with genrt.runtime.load(export_dir, backend=settings.backend, threads=settings.threads) as pipe:
        print(f"\n{family}: runtime backend {pipe.choice}", flush=True)
        run = sample_captions(runtime_generator(pipe), settings.captions, settings.seed)
        backend = pipe.choice.backend
    seconds["generate"] = time.perf_counter() - start
    result = run.score
    title = (f"genrt {family}: {SHIPPED[family].checkpoint} on {backend}, fp32, seeds {settings.seed}.., "
             f"{result.adherent}/{result.total} adhere (green frame)")
    sheet = write_png(contact_sheet(run.images, run.captions, title, verdicts=run.verdicts),
                      settings.out / f"{family}-sheet.png")
    return {"family": family, "backend": backend, "build": build, "adherent": result.adherent, "total": result.total,
            "adherence": result.rate, "colour": result.colour, "shape": result.shape, "background": result.background,
            "image_size": list(run.images.shape[1:3]), "seconds_per_image": run.median_seconds, "sheet": str(sheet),
            "seconds": seconds}


def run(settings: DemoSettings, families: list[str]) -> dict:
    start = time.perf_counter()
    rows = [demo_family(family, settings) for family in families]
    return {"seed": settings.seed, "captions": list(settings.captions), "families": rows,
            "total_seconds": time.perf_counter() - start}


def summary(report: dict) -> str:
    """The printed table: adherence and seconds per step of each family."""
    rows = [{**row, "adherent": f"{row['adherent']}/{row['total']}", "adherence": f"{100 * row['adherence']:.0f}%",
             **{f"{name} s": f"{value:.1f}" for name, value in row["seconds"].items()}} for row in report["families"]]
    columns = ["family", "backend", "adherent", "adherence", "colour", "shape", "background", "export s", "parity s",
               "build s", "generate s"]
    return markdown_table(rows, columns) + f"\n\ntotal {report['total_seconds']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--families", nargs="+", choices=list(SHIPPED),
                        help="families to run; a missing model is an error (default: every family whose model is "
                             "shipped, the others named and skipped)")
    parser.add_argument("--models", type=Path, default=MODELS, help="folder of the shipped models (default: models/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first caption's image (default: 0)")
    parser.add_argument("--captions", type=int, default=len(all_captions()),
                        help="the first N of the 36 captions (default: all)")
    parser.add_argument("--backend", default="auto", help="runtime backend (default: auto)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime CPU threads (default: its own)")
    args = parser.parse_args(argv)
    settings = DemoSettings(out=args.out, models=args.models, captions=all_captions()[:args.captions], seed=args.seed,
                            backend=args.backend, threads=args.threads)
    families = []
    for family in args.families or list(SHIPPED):  # every model first: missing ones named before minutes of work
        try:
            SHIPPED[family].export_arguments(settings.models)
        except GenrtError as error:
            if args.families:
                print(f"demo: {error}", file=sys.stderr)
                return 2
            print(f"demo: skipping {family}: {error}", file=sys.stderr)
        else:
            families.append(family)
    if not families:
        print("demo: no shipped model found: run make train-demo", file=sys.stderr)
        return 2
    report = run(settings, families)
    write_report(args.out, "adherence", report)
    print("\n" + summary(report))
    print(f"\ndemo: exports, contact sheets and adherence.json are in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
