"""``genrt parity DIR``: every exported component against its float32 PyTorch reference; exit 1 on failure."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export`")
    parser.add_argument("--components", nargs="+", default=None, help="components to check (default: all)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random inputs (default: 1234)")


def main(args: argparse.Namespace) -> int:
    from genrt.errors import InputError
    from genrt.export.families import plan_from_manifest
    from genrt.export.manifest import check_components, read_manifest
    from genrt.export.parity import check_parity, format_table

    manifest = read_manifest(args.directory)
    check_components(args.directory, manifest, args.components)
    rows = check_parity(args.directory, plan_from_manifest(manifest), args.components, seed=args.seed)
    if not rows:
        raise InputError(
            f"no backend on this machine can run {manifest['precision']} graphs (ONNX Runtime's CPU kernels lack it)",
            fix="run `genrt parity` after `genrt build` on a machine with an NVIDIA GPU and TensorRT",
        )
    print(format_table(rows))
    failed = [row for row in rows if not row.passed]
    print(f"parity: {len(rows) - len(failed)}/{len(rows)} comparisons passed")
    return 1 if failed else 0
