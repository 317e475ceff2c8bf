"""``genrt batch DIR --prompts FILE --out FOLDER``: every prompt of a file into PNGs plus ``parameters.jsonl``
(``genrt.serve.offline``), with a progress bar, resuming where an earlier run stopped. Compatible
consecutive prompts share pipeline calls. ``--ray`` spreads the prompts over Ray Data actors, one pipeline
each (``genrt.serve.ray_batch``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genrt.errors import InputError
from genrt.serve.cli import add_settings_arguments
from genrt.serve.settings import ServeSettings

# A batch has no HTTP clients to protect: a line may ask for anything the engines take.
UNLIMITED = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export` / `genrt build`")
    parser.add_argument("--prompts", required=True, help="text file: one prompt per line, or JSON objects (JSONL)")
    parser.add_argument("--out", required=True, help="output folder (images + parameters.jsonl); reruns resume")
    add_settings_arguments(parser)
    parser.add_argument("--negative-prompt", default=None, help="negative prompt of lines that set none")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of lines that set none")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale of lines that set none")
    parser.add_argument("--height", type=int, default=None, help="image height of lines that set none (ldm)")
    parser.add_argument("--width", type=int, default=None, help="image width of lines that set none (ldm)")
    parser.add_argument("--seed", type=int, default=0, help="a line without a seed gets SEED + its line number")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--ray", action="store_true", help="run on Ray Data actors (needs genrt[ray])")
    parser.add_argument("--actors", type=int, default=1, help="Ray Data actors, one pipeline each (default: 1)")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each Ray Data actor holds")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from genrt.runtime.png import manifest_sha256
    from genrt.serve.offline import finished_lines, read_prompts

    directory = Path(args.directory)
    if not (directory / "manifest.json").is_file():
        raise InputError(f"{directory} has no manifest.json", fix="pass a folder written by `genrt export`")
    settings = ServeSettings(backend=args.backend, threads=args.threads, sampler=args.sampler,
                             max_batch=args.max_batch, max_images=UNLIMITED, max_prompt_chars=UNLIMITED,
                             max_steps=UNLIMITED)
    defaults = {"negative_prompt": args.negative_prompt, "num_inference_steps": args.steps,
                "guidance_scale": args.guidance, "height": args.height, "width": args.width}
    requests = read_prompts(args.prompts, {k: v for k, v in defaults.items() if v is not None}, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digest = manifest_sha256(directory)
    done = finished_lines(out, digest)
    todo = [(line, request) for line, request in requests if line not in done]
    total = sum(request.num_images_per_prompt for _, request in requests)
    bar = tqdm(total=total, initial=total - sum(r.num_images_per_prompt for _, r in todo), unit="image",
               desc="batch", disable=args.no_progress)
    with bar:
        if args.ray:
            from genrt.serve.ray_batch import run_on_ray

            written = run_on_ray(directory, settings, todo, out, digest, args.actors, args.gpus_per_actor, bar.update)
        else:
            written = run_here(directory, settings, todo, out, digest, bar.update)
    print(f"wrote {written} images to {out} ({len(requests) - len(todo)} prompts were already done)")
    return 0


def run_here(directory: Path, settings: ServeSettings, todo: list, out: Path, manifest_sha256: str,
             advance) -> int:
    """Generate ``todo`` [(line, request)] with one pipeline in this process; images written."""
    from genrt.serve.offline import generate_lines
    from genrt.serve.service import load_pipeline

    if not todo:
        return 0
    with load_pipeline(directory, settings) as pipe:
        return generate_lines(pipe, settings, todo, out, manifest_sha256, advance)
