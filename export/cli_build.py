"""``genrt build DIR``: one TensorRT (or TensorRT-RTX) engine per component of an export folder."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export`")
    parser.add_argument("--trt", default="auto",
                        help="auto (TensorRT with a GPU, else TensorRT-RTX), tensorrt or tensorrt_rtx")
    parser.add_argument("--compute-capability", default=None,
                        help="TensorRT-RTX targets, comma separated (default: 8.6)")
    parser.add_argument("--static", action="store_true", help="fixed opt shapes instead of min..max profiles")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5 (default: 3)")
    parser.add_argument("--workspace", type=float, default=None, help="builder scratch memory cap in GB")
    parser.add_argument("--components", nargs="+", default=None, help="components to build (default: all)")


def main(args: argparse.Namespace) -> int:
    import logging

    from genrt.errors import InputError
    from genrt.export.engine import FLAVOURS, BuildSettings, build_engines, resolve_flavour
    from genrt.export.manifest import check_components, read_manifest

    if args.trt != "auto" and args.trt not in FLAVOURS:
        raise InputError(f"unknown --trt {args.trt!r}", fix=f"use auto, {', '.join(FLAVOURS)}")
    flavour = resolve_flavour(args.trt)
    if args.compute_capability is None:
        capabilities = ("8.6",) if flavour == "tensorrt_rtx" else ()
    else:
        capabilities = tuple(cc.strip() for cc in args.compute_capability.split(",") if cc.strip())
    settings = BuildSettings(flavour=flavour, compute_capabilities=capabilities, static=args.static,
                             opt_level=args.opt_level, workspace_gb=args.workspace)
    check_components(args.directory, read_manifest(args.directory), args.components)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for result in build_engines(args.directory, settings, args.components):
        status = "cache hit" if result.cache_hit else f"built in {result.seconds:.2f} s"
        print(f"{result.component:<16} {flavour:<13} {result.path.name:<34} {status}")
    return 0
