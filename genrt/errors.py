"""The one error path for mistakes a user can fix.

Every layer raises :class:`GenrtError` (or a subclass) for bad input. The message names the
problem; ``fix`` says what to do about it. The CLI prints ``error: <message> (fix: <fix>)`` on one
line and exits with code 2, without a traceback.
"""

from __future__ import annotations


class GenrtError(Exception):
    """A user-facing error: what went wrong, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if self.fix is None else f"{self.message} (fix: {self.fix})"
        return " ".join(text.split())


class CheckpointError(GenrtError):
    """A checkpoint that cannot be loaded: wrong family, missing/unexpected keys, shape mismatch."""


class ConfigError(GenrtError):
    """An unknown config name or an inconsistent configuration."""


class InputError(GenrtError):
    """A tensor, prompt or size that the model or engine cannot accept."""


class FileError(GenrtError):
    """A file or folder that cannot be written or used: disk full, read-only, name too long, in the way."""


class MissingDependencyError(GenrtError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"this feature needs the Python package '{module}', which is not installed",
            fix=f"pip install 'genrt[{extra}]'",
        )


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise an error that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module exists but one of *its* imports failed: show the real problem
        raise MissingDependencyError(module, extra) from None
