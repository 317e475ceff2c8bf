"""The ``genrt`` command line.

Subcommands register themselves lazily: ``genrt run`` imports only ``genrt.runtime`` (no torch),
``genrt export`` imports ``genrt.export`` (torch) only when it is used.
Every :class:`~genrt.errors.GenrtError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from genrt import __version__
from genrt.errors import GenrtError

# subcommand -> (module that defines `add_arguments(parser)` and `main(args) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("genrt.runtime.cli", "generate images from an export folder (torch-free runtime)"),
    "export": ("genrt.export.cli_export", "export a model's components to ONNX with a manifest"),
    "build": ("genrt.export.cli_build", "build TensorRT / TensorRT-RTX engines for an export folder"),
    "parity": ("genrt.export.cli_parity", "compare an export folder's graphs/engines with PyTorch"),
    "bench": ("genrt.runtime.bench", "measure per-stage latency of an export folder's pipeline (torch-free)"),
    "doctor": ("genrt.doctor", "report GPU, driver and backend libraries, and self-test every backend found"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genrt",
        description="Export generative image models to ONNX/TensorRT engines, run them, and measure them.",
    )
    parser.add_argument("--version", action="version", version=f"genrt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except GenrtError as exc:
        print(f"genrt {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"genrt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
