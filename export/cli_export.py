"""``genrt export FAMILY --config NAME --out DIR``: PyTorch -> ONNX folder with a manifest.

Imports torch only inside :func:`main` (``genrt run`` builds the same parser without torch).
"""

from __future__ import annotations

import argparse

from genrt.families import FAMILIES

# Largest sizes an export accepts: beyond them the sample inputs alone need tens of GB (checked before any work).
MAX_BATCH = 256  # images per call
MAX_RESOLUTION = 8192  # pixels per side
MAX_SEQUENCE_LENGTH = 4096  # tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", metavar="FAMILY", help=f"model family: {', '.join(FAMILIES)}")
    parser.add_argument("--config", help="registered config name (ldm: sd15, sd21, tiny, ...; vqgan: tiny, ...)")
    parser.add_argument("--checkpoint", default=None,
                        help="weights: ldm: diffusers pipeline folder or original .ckpt/.safetensors; vqgan: "
                             "taming .ckpt (VQModel or cond transformer); imagen: safetensors with keys "
                             "t5_encoder.*, base_unet.*, sr_unet_256.*, sr_unet_1024.*, or a DeepFloyd IF stage I "
                             "diffusers folder")
    parser.add_argument("--checkpoint-sr", default=None,
                        help="imagen: DeepFloyd IF stage II diffusers folder, exported as sr_unet_256 beside the "
                             "stage I --checkpoint")
    parser.add_argument("--random-weights", action="store_true", help="export random weights (tests, benchmarks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default: 0)")
    parser.add_argument("--out", help="export folder to write (must be empty or absent, unless --force)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, fp16, bf16 or int8 (the U-Nets quantised for ONNX Runtime's CPU, the rest fp32; "
                             "default: fp32)")
    parser.add_argument("--components", nargs="+", default=None, help="components to export (default: all)")
    parser.add_argument("--batch", default=None, help="images per call: N, MIN-MAX or MIN-OPT-MAX (default 1-1-4)")
    parser.add_argument("--resolution", default=None, help="pixels: N, MIN-MAX or MIN-OPT-MAX (default around the "
                        "config's image size)")
    parser.add_argument("--sequence-length", default=None, help="text/token length range where it may vary")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder copied into DIR/tokenizer/")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def check_sizes(text: str | None, flag: str, high: int) -> None:
    """Refuse ``text`` (N, MIN-MAX or MIN-OPT-MAX) unless every number in it is an int in ``1 .. high``:
    checked before anything is allocated at those sizes (the order is checked by ``parse_range``)."""
    from genrt.errors import InputError

    if text is None:
        return
    values = [part.strip() for part in text.split("-")]
    if not all(value.isdigit() and 1 <= int(value) <= high for value in values):
        raise InputError(f"{flag} {text!r} is not N, MIN-MAX or MIN-OPT-MAX of whole numbers in [1, {high}]",
                         fix=f"pass {flag} as N, MIN-MAX or MIN-OPT-MAX with values from 1 to {high}")


def print_schedulers(settings) -> None:
    """One line per resolved sampler and schedule of a diffusion family's settings (ldm; imagen per stage)."""
    from genrt.sampling import ScheduleConfig, describe_scheduler

    stages = getattr(settings, "stages", None)
    for label, schedule in ([("", settings.scheduler)] if hasattr(settings, "scheduler") else
                            [(f" {stage.component}", stage.scheduler) for stage in stages or ()]):
        print(f"scheduler{label}: {describe_scheduler(settings.sampler, ScheduleConfig.from_dict(dict(schedule)))}")


def main(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from genrt import validate
    from genrt.errors import InputError
    from genrt.export.families import family_plan
    from genrt.export.folder import export_folder
    from genrt.export.options import ExportOptions, parse_range
    from genrt.export.spec import PRECISIONS
    from genrt.families import family

    if not family(args.family).checkpoint_sr and args.checkpoint_sr:
        takes = ", ".join(name for name, entry in FAMILIES.items() if entry.checkpoint_sr)
        raise InputError(f"--checkpoint-sr does not apply to {args.family}",
                         fix=f"use it with {takes} exports (DeepFloyd IF stage II)")
    if not args.out or not args.out.strip():
        raise InputError("no --out folder given", fix="pass --out DIR")
    validate.choice(args.precision, "--precision", tuple(PRECISIONS))
    validate.seed(args.seed, "--seed")
    for flag, text, high in (("--batch", args.batch, MAX_BATCH), ("--resolution", args.resolution, MAX_RESOLUTION),
                             ("--sequence-length", args.sequence_length, MAX_SEQUENCE_LENGTH)):
        check_sizes(text, flag, high)
    options = ExportOptions(
        batch=parse_range(args.batch, "--batch", default_opt=1) if args.batch else None,
        resolution=parse_range(args.resolution, "--resolution") if args.resolution else None,
        sequence_length=parse_range(args.sequence_length, "--sequence-length") if args.sequence_length else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        checkpoint_sr=Path(args.checkpoint_sr) if args.checkpoint_sr else None,
        random_weights=args.random_weights,
        seed=args.seed,
        tokenizer=Path(args.tokenizer) if args.tokenizer else None,
    )
    if options.tokenizer is not None and not options.tokenizer.is_dir():
        raise InputError(f"tokenizer folder {options.tokenizer} not found", fix="pass the folder that holds the "
                         "tokenizer files")
    plan = family_plan(args.family, args.config, args.precision, options)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = export_folder(plan, args.out, components=args.components, force=args.force)
    for name, entry in manifest.components.items():
        islands = ", ".join(entry.fp32_islands) or "none"
        onnx = entry.onnx.relative_to(manifest.root).as_posix()
        print(f"{name:<16} {onnx:<28} nodes {entry.nodes.exported:>6} -> {entry.nodes.cleaned:<6} fp32 islands: {islands}")
    print_schedulers(manifest.settings)
    print(f"wrote {Path(args.out).absolute()}/manifest.json")
    return 0
