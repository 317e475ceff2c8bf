"""What every reliability case asserts: exit code 2, one stderr line, no traceback, files unchanged."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from genrt.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    """One command's exit code and its output."""

    code: int
    out: str
    err: str


def cli(argv: list[str]) -> Outcome:
    """``genrt ARGV`` in this process (argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def cli_process(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.Popen:
    """``genrt ARGV`` as a child process (where signals or real exit codes matter)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "genrt.cli", *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def tree(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` -> sha256 of its bytes ("dir" for folders): a folder's state."""
    state = {}
    for root in roots:
        if not root.exists():
            state[str(root)] = "absent"
            continue
        for path in sorted([root, *root.rglob("*")]):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_refused(outcome: Outcome, command: str, message: str = "") -> None:
    """Exit code 2 and exactly one stderr line ``genrt COMMAND: error: ...`` with a fix, no traceback."""
    lines = outcome.err.strip().splitlines()
    assert outcome.code == 2, (outcome.code, outcome.err[-2000:])
    assert len(lines) == 1, outcome.err[-2000:]
    assert lines[0].startswith(f"genrt {command}: error: "), lines[0]
    assert "fix:" in lines[0] and "Traceback" not in outcome.err, lines[0]
    assert message in lines[0], (message, lines[0])


def dead_pid() -> int:
    """The pid of a process that has exited (for stale-file cases)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
