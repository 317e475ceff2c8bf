"""An advisory lock on an export folder, so that `genrt export`, `genrt build` and `genrt parity` on one
folder run one after the other instead of losing each other's work (torch-free).

The lock is ``fcntl.flock`` on ``.NAME.lock`` beside the folder ``NAME`` (beside, so that an export
can lock a folder that does not exist yet, and a replaced folder keeps its lock). The kernel drops it
when the holder exits, even by SIGKILL. The holder deletes the file as it finishes; a waiter that then
holds a deleted inode opens the path again, so two runs never hold the lock at once.
A second run prints one line naming the holder and waits. Once holding the lock, a run deletes the
temporary files and staging folders that dead processes left (:func:`genrt.fileio.remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

from genrt.errors import FileError
from genrt.fileio import file_error, remove_stale

LOCK_SUFFIX = ".lock"
# Without a writable parent folder there is nothing to protect: nobody can write there either.
_UNLOCKABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def lock_path(folder: Path) -> Path:
    """``.NAME.lock`` beside the export folder ``NAME``."""
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str, wait: bool = True) -> Iterator[None]:
    """Hold the lock of export folder ``folder`` for ``command`` ("export", "build", "parity").

    ``wait``: block until the holder finishes (after one line on stderr); else a FileError.
    """
    folder = Path(folder).absolute()
    path = lock_path(folder)
    try:
        fd = _acquire(path, folder, command, wait)
    except OSError as exc:
        if exc.errno in _UNLOCKABLE or (exc.errno == errno.ENOENT and not folder.parent.exists()):
            yield  # read-only or missing parent: later writes fail with their own clean error
            return
        raise file_error(exc, path, "create the lock file") from None
    try:
        os.pwrite(fd, f"genrt {command} (pid {os.getpid()})".encode(), 0)
        remove_stale(folder.parent, folder.name)
        remove_stale(folder, recursive=True)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a waiter then finds its inode gone and retries
        os.close(fd)  # releases the lock


def _acquire(path: Path, folder: Path, command: str, wait: bool) -> int:
    """A descriptor of ``path`` holding its exclusive flock, on the inode that is at ``path`` now."""
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another genrt process"
            if not wait:
                os.close(fd)
                raise FileError(f"{folder} is in use by {holder}", fix="wait for it to finish, then run again") from None
            if not announced:
                print(f"genrt {command}: waiting for {holder} to finish with {folder}", file=sys.stderr, flush=True)
                announced = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as it finished: lock the new one


def locked(command: str, folder_argument: str = "directory") -> Callable:
    """Decorator: run the function holding :func:`folder_lock` of its argument ``folder_argument``."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            folder = signature.bind(*args, **kwargs).arguments[folder_argument]
            with folder_lock(folder, command):
                return function(*args, **kwargs)

        return wrapper

    return decorate
