"""The one file-writing path: atomic, durable, umask-respecting, with clean errors (torch-free).

- :func:`atomic_path` / :func:`write_bytes_atomic` / :func:`write_text_atomic`: a reader sees the old
  file or the complete new one, never half of one (temporary file beside the target, fsync, rename,
  fsync of the folder). :func:`write_files_atomic` writes several files all or nothing.
- Files get ``0o666 & ~umask`` and staging folders ``0o777 & ~umask``, as ``open()`` / ``mkdir`` would
  (``tempfile`` alone makes them 0600 / 0700).
- An ``OSError`` while writing (disk full, read-only file system, name too long, permission denied,
  a parent that is a file) becomes one :class:`~genrt.errors.FileError` naming the path and the fix.
- :func:`check_output_file` checks an output path *before* any compute.
- Temporary names carry the writer's pid (``.NAME.<pid>.<random>.partial``), so
  :func:`remove_stale` can delete what a killed process left behind, and only that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from genrt.errors import FileError

PARTIAL_SUFFIX = ".partial"  # staging folders and temporary files being written
RETIRED_SUFFIX = ".old"  # a replaced export folder, deleted once the new one is in place
# .NAME.<pid>.<random>.partial | .old: what a writer leaves beside its target while it works
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+(\.partial|\.old)$")

_REASONS = {
    errno.ENOSPC: ("no space is left on its device", "free some disk space, or write somewhere else"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or write somewhere else"),
    errno.EROFS: ("its file system is read-only", "write to a writable folder"),
    errno.ENAMETOOLONG: ("its name is too long", "choose a shorter file name"),
    errno.EACCES: ("permission is denied", "write to a folder you own, or fix its permissions"),
    errno.EPERM: ("the operation is not permitted", "write to a folder you own, or fix its permissions"),
    errno.ENOTDIR: ("a parent of it is a file, not a folder", "choose a path whose parents are folders"),
    errno.EEXIST: ("a parent of it is a file, not a folder", "choose a path whose parents are folders"),  # mkdir
    errno.EISDIR: ("it is a folder", "name a file, not a folder"),
}


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_error(exc: OSError, path: str | os.PathLike, action: str = "write") -> FileError:
    """The FileError for ``exc`` raised while doing ``action`` on ``path``."""
    reason, fix = _REASONS.get(exc.errno, (exc.strerror or str(exc), "check the path and try again"))
    shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-40:]}"
    return FileError(f"cannot {action} {shown}: {reason}", fix=fix)


@contextlib.contextmanager
def file_errors(path: str | os.PathLike, action: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` inside the block into a :class:`FileError` about ``path``."""
    try:
        yield
    except OSError as exc:
        raise file_error(exc, path, action) from None


def temporary_prefix(path: Path) -> str:
    """``.NAME.<pid>.``: the start of every temporary name for ``path`` (see :func:`remove_stale`)."""
    return f".{path.name}.{os.getpid()}."


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename into it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temporary_file(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` with the umask's mode, removed if still there at the end (also a scratch
    file that must sit beside ``path``, e.g. a graph whose external weights are found by relative path; a crash
    leaves a name :func:`remove_stale` knows)."""
    with file_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=PARTIAL_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``with atomic_path("engine.plan") as tmp: tmp.write_bytes(data)``: engine.plan is untouched until
    the block succeeds. OSErrors inside the block and in the rename become a FileError.
    """
    path = Path(path)
    with temporary_file(path) as tmp, file_errors(path):
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_files_atomic(files: Mapping[Path, bytes]) -> None:
    """Write every file or none: all temporary files are written and synced before the first rename."""
    with contextlib.ExitStack() as stack:
        temporaries = {}
        for path, data in files.items():
            tmp = stack.enter_context(temporary_file(Path(path)))
            with file_errors(path):
                tmp.write_bytes(data)
                _fsync(tmp)
            temporaries[Path(path)] = tmp
        for path, tmp in temporaries.items():
            with file_errors(path):
                os.replace(tmp, path)
        for folder in {path.parent for path in temporaries}:
            with file_errors(folder):
                _fsync(folder)


def staging_folder(target: Path) -> Path:
    """A new empty folder beside ``target`` (``.NAME.<pid>.<random>.partial``, the umask's mode)."""
    with file_errors(target.parent):
        folder = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), suffix=PARTIAL_SUFFIX, dir=target.parent))
        os.chmod(folder, 0o777 & ~_umask())
    return folder


def retired_name(target: Path) -> Path:
    """A free name beside ``target`` to move an old folder to before deleting it."""
    return target.parent / f"{temporary_prefix(target)}{os.urandom(4).hex()}{RETIRED_SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, name: str | None = None, recursive: bool = False) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` (of target ``name`` only, when given) whose
    writer's process is dead; returns what was removed. ``recursive``: also in sub-folders."""
    removed = []
    if not folder.is_dir():
        return removed
    candidates = folder.rglob(".*") if recursive else folder.glob(".*")
    for path in list(candidates):
        match = _TEMPORARY.match(path.name)
        if match is None or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def check_output_file(path: str | os.PathLike, force: bool, flag: str = "--out") -> Path:
    """``path`` as an absolute Path if a file can be written there, checked before any work:
    not empty, not a folder, not an existing file without ``force``, parents folders (or creatable),
    a name that fits, and a writable nearest existing folder."""
    if not str(path).strip():
        raise FileError(f"{flag} is empty", fix=f"pass {flag} FILE.png")
    with file_errors(path, "write to"):
        return _check_output_file(Path(path).absolute(), str(path), force, flag)


def _check_output_file(target: Path, given: str, force: bool, flag: str) -> Path:
    if target.is_dir() or given.endswith(os.sep):
        raise FileError(f"{flag} {given} is a folder", fix=f"name a file, e.g. {flag} {target / 'image.png'}")
    if target.exists() and not force:
        raise FileError(f"{flag} {given} exists", fix="choose another name, or pass --force to overwrite it")
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FileError(f"{flag} {given}: {existing} is a file, not a folder",
                        fix="choose a path whose parents are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileError(f"{flag} {given}: cannot write into {existing} (read-only or not yours)",
                        fix="write to a folder you can write to")
    return target
