"""``genrt run DIR --prompt ... --out out.png``: generate images from an export folder, without torch.

Works for every family: ldm and imagen take ``--prompt`` (and ``--negative-prompt``); vqgan samples
from its prior, conditioned on ``--class-id`` (or its start token). A tqdm bar follows the
denoising (or code-sampling) steps; each PNG is written atomically. With ``--num-images`` N > 1 the
files are ``out_0.png`` .. ``out_{N-1}.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generation_arguments(parser)
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """What one pipeline call needs (shared with ``genrt bench``)."""
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export` / `genrt build`")
    parser.add_argument("--prompt", help="text prompt (ldm, imagen)")
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from (ldm, imagen)")
    parser.add_argument("--class-id", type=int, default=None, help="class label of a class-conditional prior (vqgan)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="engine backend (default: auto)")
    parser.add_argument("--sampler", default=None, help="ddim, ddpm, dpmpp_2m, euler, euler_ancestral (diffusion)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: from the manifest)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the noise (default: random)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (ldm)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (ldm)")
    parser.add_argument("--num-images", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0: its default)")


def open_pipeline(args: argparse.Namespace):
    """``genrt.runtime.load`` of ``args.directory`` with the backend, threads and (diffusion families) sampler."""
    import genrt.runtime
    from genrt.errors import InputError
    from genrt.families import family

    if args.num_images < 1:
        raise InputError(f"--num-images is {args.num_images}", fix="pass --num-images 1 or more")
    denoising = family(genrt.runtime.read_manifest(args.directory).family).denoising
    return genrt.runtime.load(args.directory, backend=args.backend, threads=args.threads,
                              sampler=args.sampler if denoising else None)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from genrt.fileio import write_bytes_atomic
    from genrt.runtime.png import generation_parameters, png_bytes

    bar = tqdm(desc="generate", unit="step", disable=args.no_progress, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    with bar, open_pipeline(args) as pipe:
        result = generate(pipe, args, progress)
    paths = _paths(Path(args.out), len(result.images))
    parameters = generation_parameters(  # into each PNG's text chunk; a setting not given is the manifest's default
        args.directory, prompt=args.prompt, negative_prompt=args.negative_prompt, class_id=args.class_id,
        num_inference_steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler, seed=result.seed,
        height=int(result.images.shape[1]), width=int(result.images.shape[2]), num_images=len(paths))
    for index, (path, image) in enumerate(zip(paths, result.images)):
        write_bytes_atomic(path, png_bytes(image, {**parameters, "index": index}))
    stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.timings.items())
    print(f"wrote {', '.join(str(p) for p in paths)} ({pipe.backend}; {stages})")
    return 0


def generate(pipe, args: argparse.Namespace, progress=None):
    """One call of ``pipe`` with the arguments of :func:`add_generation_arguments`, as its family takes them."""
    from genrt.errors import InputError
    from genrt.families import family

    entry = family(pipe.family)
    if not entry.prompted:
        condition = None if args.class_id is None else [args.class_id] * args.num_images
        return pipe(condition, batch_size=args.num_images, seed=args.seed, progress=progress)
    if not args.prompt:
        raise InputError(f"the {entry.name} model needs a text prompt", fix="pass --prompt 'a photo of a cat'")
    size = {"height": args.height, "width": args.width} if entry.free_size else {}
    if not entry.free_size and (args.height is not None or args.width is not None):
        raise InputError(f"the {entry.name} model has fixed output resolutions", fix="drop --height/--width")
    return pipe([args.prompt] * args.num_images, negative_prompt=args.negative_prompt, num_steps=args.steps,
                guidance_scale=args.guidance, seed=args.seed, progress=progress, **size)


def _paths(out: Path, count: int) -> list[Path]:
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{index}{out.suffix}") for index in range(count)]
