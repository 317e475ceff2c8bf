"""``genrt build DIR``: one TensorRT (or TensorRT-RTX) engine per component of an export folder, or with
``--trt onnxruntime-cuda`` the components' graphs fused for ONNX Runtime CUDA (``genrt.export.cuda_fusion``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export`")
    parser.add_argument("--trt", default="auto",
                        help="auto (TensorRT with a GPU, else TensorRT-RTX), tensorrt, tensorrt_rtx, or "
                             "onnxruntime-cuda (ONNX Runtime's CUDA fusions of the U-Net, VAE and text encoder)")
    parser.add_argument("--compute-capability", default=None,
                        help="TensorRT-RTX targets, comma separated (default: this GPU; without a GPU the "
                             "portable set 8.6,8.9,12.0); standard TensorRT builds for this GPU only")
    parser.add_argument("--static", action="store_true", help="fixed opt shapes instead of min..max profiles")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5 (default: 3)")
    parser.add_argument("--workspace", type=float, default=None, help="builder scratch memory cap in GB")
    parser.add_argument("--components", nargs="+", default=None, help="components to build (default: all)")


def main(args: argparse.Namespace) -> int:
    import logging

    from genrt.errors import InputError
    from genrt.export.cuda_fusion import FLAVOUR as CUDA_FUSION
    from genrt.export.engine import FLAVOURS, BuildSettings, build_engines
    from genrt.export.targets import build_targets, local_compute_capability, resolve_flavour
    from genrt.manifest import read_manifest

    if args.trt == CUDA_FUSION:
        return _fuse(args)
    if args.trt != "auto" and args.trt not in FLAVOURS:
        raise InputError(f"unknown --trt {args.trt!r}", fix=f"use auto, {', '.join(FLAVOURS)} or {CUDA_FUSION}")
    requested = None
    if args.compute_capability is not None:
        requested = tuple(cc.strip() for cc in args.compute_capability.split(",") if cc.strip())
    local = local_compute_capability()
    flavour = resolve_flavour(args.trt, local)
    settings = BuildSettings(flavour=flavour, compute_capabilities=build_targets(flavour, requested, local),
                             static=args.static, opt_level=args.opt_level, workspace_gb=args.workspace)
    read_manifest(args.directory).component_names(args.components)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def building(component: str, targets: tuple[str, ...]) -> None:
        print(f"{component:<16} {flavour:<13} building for compute capability {', '.join(targets)} ...", flush=True)

    for result in build_engines(args.directory, settings, args.components, on_build=building):
        status = "cache hit" if result.cache_hit else f"built in {result.seconds:.2f} s"
        print(f"{result.component:<16} {flavour:<13} {result.path.name:<34} {status}")
    return 0


def _fuse(args: argparse.Namespace) -> int:
    from genrt.errors import InputError
    from genrt.export.cuda_fusion import FLAVOUR, build_cuda_graphs

    given = [flag for flag, value in (("--compute-capability", args.compute_capability), ("--static", args.static),
                                      ("--workspace", args.workspace)) if value]
    if given:
        raise InputError(f"{', '.join(given)} applies to TensorRT engines, not to --trt {FLAVOUR}",
                         fix=f"drop {', '.join(given)}")
    for result in build_cuda_graphs(args.directory, args.components):
        status = "cache hit" if result.cache_hit else f"fused in {result.seconds:.2f} s: " + ", ".join(
            f"{op} {count}" for op, count in result.fused_ops.items())
        print(f"{result.component:<16} {FLAVOUR:<16} {result.path.name:<34} {status}")
    return 0
