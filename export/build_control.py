"""What runs around a TensorRT build: one process-wide logger, and Ctrl-C that always stops it.

TensorRT keeps the first logger a process hands it: builders, parsers and runtimes created later log
to that one. So genrt has one logger per TensorRT module (``tensorrt``, ``tensorrt_rtx``), shared with the
runtime's runners (``genrt.runtime.backends.trt_logger``), and points it at the current build's list of lines
(:func:`build_log`).

A KeyboardInterrupt raised inside TensorRT's log callback is swallowed there and the build goes on. So
during :func:`interruptible` SIGINT only sets an event; the build runs on a worker thread
(:func:`run_build`) while the main thread waits where Python signal handlers run; the builder's
progress monitor (:func:`cancel_monitor`) cancels the build at its next step; and KeyboardInterrupt is
raised in the main thread once the builder has returned, before anything is written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from genrt.runtime.backends.trt_logger import shared_logger

T = TypeVar("T")

_BUILD_LOCK = threading.Lock()  # one build at a time per process: the logger has one sink


@contextmanager
def build_log(trt) -> Iterator[tuple[object, list[str]]]:
    """``(logger, lines)``: the shared logger, sending this build's messages to ``lines``."""
    with _BUILD_LOCK:
        logger = shared_logger(trt)
        lines: list[str] = []
        logger.sink = lines
        try:
            yield logger, lines
        finally:
            logger.sink = None


@contextmanager
def interruptible() -> Iterator[threading.Event]:
    """SIGINT sets the yielded event instead of raising; on leaving, KeyboardInterrupt if it was set.

    Outside the main thread (where Python delivers no signals) the event is never set.
    """
    cancelled = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancelled
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancelled.set())
    try:
        yield cancelled
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if cancelled.is_set():
        raise KeyboardInterrupt


def run_build(build: Callable[[], T], cancelled: threading.Event) -> T:
    """``build()`` on a worker thread while this thread waits (and handles signals); KeyboardInterrupt if cancelled."""
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["value"] = build()
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="genrt-trt-build", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if cancelled.is_set():
        raise KeyboardInterrupt
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def cancel_monitor(trt, cancelled: threading.Event):
    """A ``trt.IProgressMonitor`` that cancels the build at its next step once ``cancelled`` is set."""

    class CancelMonitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            """Phases need no bookkeeping: only steps can cancel."""

        def step_complete(self, phase_name, step):
            return not cancelled.is_set()

        def phase_finish(self, phase_name):
            """As phase_start."""

    return CancelMonitor()
