"""``genrt parity DIR``: every exported component against its float32 PyTorch reference; exit 1 on failure."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder written by `genrt export`")
    parser.add_argument("--components", nargs="+", default=None, help="components to check (default: all)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random inputs (default: 1234)")


def main(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from genrt import validate
    from genrt.errors import FileError, InputError
    from genrt.export.families import plan_from_manifest
    from genrt.export.parity import check_parity, format_table
    from genrt.lock import folder_lock
    from genrt.manifest import read_manifest

    validate.seed(args.seed, "--seed")
    with folder_lock(args.directory, "parity"):
        manifest = read_manifest(args.directory)
        manifest.component_names(args.components)
        folder = Path(args.directory)
        if not os.access(folder, os.W_OK | os.X_OK) or not os.access(folder / "manifest.json", os.W_OK):
            raise FileError(f"cannot record parity results in {folder.absolute()} (read-only or not yours)",
                            fix="run `genrt parity` on a writable copy of the folder")
        rows = check_parity(manifest, plan_from_manifest(manifest), args.components, seed=args.seed)
    if not rows:
        raise InputError(
            f"no backend on this machine can run {manifest.precision} graphs (ONNX Runtime's CPU kernels lack it)",
            fix="run `genrt parity` after `genrt build` on a machine with an NVIDIA GPU and TensorRT",
        )
    print(format_table(rows))
    failed = [row for row in rows if not row.passed]
    print(f"parity: {len(rows) - len(failed)}/{len(rows)} comparisons passed")
    return 1 if failed else 0
