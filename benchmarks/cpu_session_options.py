"""ONNX Runtime CPU session options measured against each other, per tiny component, at 1 and 2 threads.

Variants: the session options the runtime opens with (``genrt.runtime.OrtOptions()``: ``ORT_ENABLE_ALL``,
memory arena on, spinning worker threads), and each with one change: no spinning
(``session.intra_op.allow_spinning=0``), graph optimisation ``ORT_ENABLE_EXTENDED``, no CPU memory arena. One process, the variants interleaved call by
call (``benchmarks.compare_backends.time_interleaved``); ``ratio_vs_default`` > 1 means the variant is faster.

    python -m benchmarks.cpu_session_options --families ldm vqgan imagen --out benchmarks/results
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable

from benchmarks.compare_backends import time_interleaved
from genrt.fileio import write_text_atomic
from genrt.runtime.backends.ort_options import OrtOptions
from genrt.runtime.timing import markdown_table, write_report

COLUMNS = ("component", "threads", "variant", "median_ms", "p10_ms", "p90_ms", "ratio_vs_default")
# The components timed per family (the big imagen SR stages add minutes and no new op mix).
COMPONENTS = {"ldm": ("text_encoder", "unet", "vae_decoder"), "vqgan": ("decoder", "prior"),
              "imagen": ("t5_encoder", "base_unet")}


def variants(ort, threads: int) -> dict[str, object]:
    """Variant name -> ``SessionOptions`` with ``threads`` intra-op threads: the runtime's defaults
    (``OrtOptions()``) and each with one change."""
    chosen = {"default": OrtOptions(), "no-spinning": OrtOptions(spinning=False),
              "level-extended": OrtOptions(optimization="extended"), "no-arena": OrtOptions(memory_arena=False)}
    return {name: options.session_options(ort, threads) for name, options in chosen.items()}


def measure(family: str, threads: tuple[int, ...], warmup: int, repeats: int) -> list[dict]:
    import onnxruntime as ort

    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder
    from genrt.export.options import ExportOptions
    from genrt.runtime.backends.base import numpy_dtype

    plan = family_plan(family, "tiny", "fp32", ExportOptions(random_weights=True, seed=0))
    names = [name for name in COMPONENTS[family] if name in plan.components]
    rows = []
    with tempfile.TemporaryDirectory(prefix="genrt-session-options-") as scratch:
        directory = Path(scratch) / "export"
        export_folder(plan, directory, components=names)
        for name in names:
            spec = plan.components[name]
            sample = spec.sample_inputs("opt", seed=0)
            feeds = {t.name: sample[t.name].numpy().astype(numpy_dtype(t.dtype)) for t in spec.inputs}
            for count in threads:
                calls: dict[str, Callable[[], object]] = {}
                for variant, options in variants(ort, count).items():
                    session = ort.InferenceSession(str(directory / name / "model.onnx"), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
                    calls[variant] = lambda s=session: s.run(None, feeds)
                spreads = time_interleaved(calls, warmup=warmup, repeats=repeats)
                default = spreads["default"].median_ms
                rows += [{"component": f"{family}/{name}", "threads": count, "variant": variant,
                          "median_ms": s.median_ms, "p10_ms": s.p10_ms, "p90_ms": s.p90_ms,
                          "ratio_vs_default": default / s.median_ms} for variant, s in spreads.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(COMPONENTS), choices=tuple(COMPONENTS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    rows = [row for family in args.families for row in measure(family, tuple(args.threads), args.warmup, args.repeats)]
    table = markdown_table(rows, COLUMNS)
    print(table)
    payload = {"families": args.families, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
               "timing": "variants interleaved call by call (ABBA rounds); median, p10, p90", "rows": rows}
    path = write_report(args.out, "cpu-session-options", payload)
    write_text_atomic(path.with_suffix(".md"), table + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
