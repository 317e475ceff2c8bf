"""``make demo``: the whole genrt workflow on this machine, one family after another, through the CLI.

For each family: export the tiny config with random weights to ONNX (fp32), check every graph against
PyTorch at its min/opt/max shapes, build TensorRT-RTX engines for SM86 (this works without a GPU),
generate an image with the torch-free runtime on the best backend available, and benchmark that
pipeline. The commands printed are the ones a user types.
Random weights make noise images: the demo shows the mechanics and the timings, not a trained model.

    python -m benchmarks.demo --out out/demo [--families ldm vqgan imagen]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

# Short: the tiny text encoders take 16 (T5) or 77 (CLIP) tokens, and the stand-in tokenizer of a
# random-weight export spends one token per character.
PROMPT = "a red cube"
# family -> extra arguments of `genrt run` / `genrt bench` (VQGAN samples codes: no prompt, no steps)
RUN_OPTIONS = {
    "ldm": ["--prompt", PROMPT, "--steps", "10"],
    "vqgan": [],
    "imagen": ["--prompt", PROMPT, "--steps", "4"],
}


def step(argv: list[str]) -> None:
    """Run one ``genrt`` command in its own process, as a user would."""
    print(f"\n$ genrt {shlex.join(argv)}", flush=True)
    code = subprocess.run([sys.executable, "-m", "genrt.cli", *argv]).returncode
    if code != 0:
        raise SystemExit(f"demo: `genrt {shlex.join(argv)}` failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--families", nargs="+", default=list(RUN_OPTIONS), choices=list(RUN_OPTIONS))
    parser.add_argument("--backend", default="auto", help="runtime backend (default: auto)")
    args = parser.parse_args(argv)

    for family in args.families:
        export_dir = args.out / family
        step(["export", family, "--config", "tiny", "--random-weights", "--out", str(export_dir), "--force"])
        step(["parity", str(export_dir)])
        step(["build", str(export_dir), "--trt", "tensorrt_rtx", "--compute-capability", "8.6"])
        step(["run", str(export_dir), "--out", str(args.out / f"{family}.png"), "--backend", args.backend,
              "--seed", "0", "--no-progress", *RUN_OPTIONS[family]])
        step(["bench", str(export_dir), "--backend", args.backend, "--warmup", "1", "--repeats", "3",
              "--out", str(args.out / "bench"), *RUN_OPTIONS[family]])
    print(f"\ndemo: images and reports are in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
