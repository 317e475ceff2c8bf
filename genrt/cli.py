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
from genrt.fileio import file_error

# subcommand -> (module that defines `add_arguments(parser)` and `main(args) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("genrt.runtime.cli", "generate images from an export folder (torch-free runtime)"),
    "export": ("genrt.export.cli_export", "export a model's components to ONNX with a manifest"),
    "build": ("genrt.export.cli_build", "build TensorRT / TensorRT-RTX engines for an export folder"),
    "parity": ("genrt.export.cli_parity", "compare an export folder's graphs/engines with PyTorch"),
    "bench": ("genrt.runtime.bench", "measure per-stage latency of an export folder's pipeline (torch-free)"),
    "doctor": ("genrt.doctor", "report GPU, driver and backend libraries, and self-test every backend found"),
    "serve": ("genrt.serve.cli", "serve an export folder over HTTP (FastAPI; --ray for Ray Serve)"),
    "batch": ("genrt.serve.batch_cli", "generate every prompt of a file into a folder, resuming (--ray: Ray Data)"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), with a hint, not the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (fix: see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="genrt",
        description="Export generative image models to ONNX/TensorRT engines, run them, and measure them.",
    )
    parser.add_argument("--version", action="version", version=f"genrt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name, _parser=sub)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand's parser, which names the subcommand
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except GenrtError as exc:
        print(f"genrt {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file-system failure outside genrt.fileio (a library writing for us)
        print(f"genrt {args.command}: error: {file_error(exc, exc.filename or 'a file').one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genrt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
