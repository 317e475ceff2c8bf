"""``genrt run DIR --prompt ... --out out.png``: generate images from an export folder, without torch.

Works for every family: ldm and imagen take ``--prompt`` (and ``--negative-prompt``); vqgan samples
from its prior, conditioned on ``--prompt`` (one of the export's class names), ``--class-id`` (or its
start token). A tqdm bar follows the
denoising (or code-sampling) steps; each PNG is written atomically. With ``--num-images`` N > 1 the
files are ``out_0.png`` .. ``out_{N-1}.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generation_arguments(parser)
    parser.add_argument("--out", required=True, help="output PNG path (must not exist, unless --force)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """What one pipeline call needs (shared with ``genrt bench``)."""
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export` / `genrt build`")
    parser.add_argument("--prompt", help="text prompt (ldm, imagen; vqgan: one of the model's class names)")
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
    from genrt.families import family

    entry = family(genrt.runtime.read_manifest(args.directory).family)
    check_generation_arguments(args, entry)
    return genrt.runtime.load(args.directory, backend=args.backend, threads=args.threads,
                              sampler=args.sampler if entry.denoising else None)


def check_generation_arguments(args: argparse.Namespace, entry) -> None:
    """Refuse out-of-range values and flags that do not apply to the family ``entry``, before any work."""
    from genrt import validate
    from genrt.errors import InputError

    validate.integer(args.num_images, "--num-images", low=1)
    validate.integer(args.threads, "--threads", low=0, high=validate.THREADS_MAX)
    validate.seed(args.seed, "--seed")
    if args.steps is not None:
        validate.integer(args.steps, "--steps", low=1)
    if args.guidance is not None:
        validate.guidance(args.guidance, "--guidance")
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value is not None:
            validate.integer(value, flag, low=1)
    applies = {"--prompt": (args.prompt, entry.prompted or entry.class_prompts),
               "--negative-prompt": (args.negative_prompt, entry.prompted),
               "--class-id": (args.class_id, not entry.prompted), "--sampler": (args.sampler, entry.denoising),
               "--steps": (args.steps, entry.denoising), "--guidance": (args.guidance, entry.denoising),
               "--height": (args.height, entry.free_size), "--width": (args.width, entry.free_size)}
    refused = [flag for flag, (value, ok) in applies.items() if value is not None and not ok]
    if refused:
        takes = ", ".join(flag for flag, (_, ok) in applies.items() if ok)
        raise InputError(f"{', '.join(refused)} does not apply to {entry.name} exports",
                         fix=f"drop {', '.join(refused)} ({entry.name} takes {takes})")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from genrt.fileio import write_files_atomic
    from genrt.runtime.png import generation_parameters, png_bytes

    paths = output_paths(args.out, args.num_images, args.force)
    with open_pipeline(args) as pipe, tqdm(desc="generate", unit="step", disable=args.no_progress,
                                           leave=False) as bar:
        bar.total = pipe.callback_steps(args.steps)

        def step_done(pipe, step_index, timestep, kwargs) -> dict:  # diffusers' callback_on_step_end
            bar.update(1)
            return kwargs

        result = generate(pipe, args, step_done)
    parameters = generation_parameters(  # into each PNG's text chunk; a setting not given is the manifest's default
        args.directory, prompt=args.prompt, negative_prompt=args.negative_prompt, class_id=args.class_id,
        num_inference_steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler, seed=result.seed,
        height=int(result.images.shape[1]), width=int(result.images.shape[2]), num_images=len(paths))
    files = {path: png_bytes(image, {**parameters, "index": index})
             for index, (path, image) in enumerate(zip(paths, result.images))}
    write_files_atomic(files)  # every image or none
    stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.timings.items())
    print(f"wrote {', '.join(str(p) for p in paths)} ({pipe.backend}; {stages})")
    print(f"backend: {pipe.choice}")  # which backend ran, and why the faster ones were passed over
    return 0


def generate(pipe, args: argparse.Namespace, callback_on_step_end=None):
    """One call of ``pipe`` with the arguments of :func:`add_generation_arguments`, as its family takes them."""
    from genrt.errors import InputError
    from genrt.families import family

    entry = family(pipe.family)
    if not entry.prompted:
        condition = None if args.class_id is None else [args.class_id] * args.num_images
        return pipe(condition, prompt=args.prompt, batch_size=args.num_images, seed=args.seed,
                    callback_on_step_end=callback_on_step_end)
    if not args.prompt:
        raise InputError(f"the {entry.name} model needs a text prompt", fix="pass --prompt 'a photo of a cat'")
    size = {"height": args.height, "width": args.width} if entry.free_size else {}
    return pipe(args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                num_images_per_prompt=args.num_images, guidance_scale=args.guidance, seed=args.seed,
                callback_on_step_end=callback_on_step_end, **size)


def output_paths(out: str, count: int, force: bool) -> list[Path]:
    """The PNG files of ``--out`` for ``count`` images (``out_0.png`` .. with several), each checked
    writable (and absent without ``force``) before any work."""
    from genrt.fileio import check_output_file

    target = check_output_file(out, force=True)
    if target.suffix.lower() != ".png":
        target = target.with_suffix(".png")
    paths = [target] if count == 1 else [target.with_name(f"{target.stem}_{i}{target.suffix}") for i in range(count)]
    return [check_output_file(path, force) for path in paths]
