"""Micro-batching: concurrent jobs with equal ``batch_key`` go through one pipeline call.

One worker thread owns the pipeline. It takes the oldest queued job, then waits up to ``max_wait_s``
for more jobs of the same key (in arrival order) until the call holds ``max_rows(job)`` images, runs the
call, and hands each caller its own images. The queue is bounded (:class:`QueueFull` beyond
``queue_size`` jobs); a job whose future was cancelled while queued (caller gone, timed out) is dropped
before it costs a call. ``close()`` stops new submissions and finishes every job already accepted.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from genrt.errors import GenrtError
from genrt.serve.metrics import Metrics
from genrt.serve.request import Job


class QueueFull(GenrtError):
    """The server's queue holds as many jobs as it may; retry later."""


class ShuttingDown(GenrtError):
    """The server is stopping and accepts no new work."""


class Batcher:
    """``submit(job) -> Future[JobResult]``; ``run(jobs)`` is one pipeline call (``genrt.serve.call``)."""

    def __init__(self, run: Callable[[Sequence[Job]], list], max_rows: Callable[[Job], int], max_wait_s: float,
                 queue_size: int, metrics: Metrics):
        self._run = run
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._queue_size = queue_size
        self._metrics = metrics
        self._pending: collections.deque[tuple[Job, Future]] = collections.deque()
        self._changed = threading.Condition()
        self._closing = False
        self.calls = 0  # pipeline calls made
        self.call_seconds = 0.0  # their wall time, summed (Retry-After estimates)
        self._worker = threading.Thread(target=self._loop, name="genrt-batcher", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Future:
        future: Future = Future()
        with self._changed:
            if self._closing:
                raise ShuttingDown("the server is shutting down", fix="retry on another replica or after restart")
            if len(self._pending) >= self._queue_size:
                raise QueueFull(f"the queue is full ({self._queue_size} requests waiting)",
                                fix=f"retry after {self.retry_after_s()} s")
            self._pending.append((job, future))
            self._metrics.set_queue_depth(len(self._pending))
            self._changed.notify_all()
        return future

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one batch (at least 1)."""
        mean = self.call_seconds / self.calls if self.calls else 1.0
        return max(1, round(mean * max(1, len(self._pending)) / 2))

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs; return when every accepted job has been answered."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._worker.join(timeout)

    # -- worker ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._call(batch)

    def _next_batch(self) -> list[tuple[Job, Future]] | None:
        """The next call's jobs ([] when all taken were cancelled), or None when closed and drained."""
        with self._changed:
            while not self._pending:
                if self._closing:
                    return None
                self._changed.wait()
            first = self._take_first()
            if first is None:
                return []
            batch, rows = [first], first[0].rows
            limit = self._max_rows(first[0])
            deadline = time.monotonic() + self._max_wait_s
            while rows < limit:
                rows = self._take_compatible(batch, rows, limit)
                remaining = deadline - time.monotonic()
                if rows >= limit or remaining <= 0 or self._closing:
                    break
                self._changed.wait(remaining)
            self._metrics.set_queue_depth(len(self._pending))
            return batch

    def _take_first(self) -> tuple[Job, Future] | None:
        while self._pending:
            job, future = self._pending.popleft()
            if future.set_running_or_notify_cancel():
                return job, future
            self._metrics.drop()
        return None

    def _take_compatible(self, batch: list, rows: int, limit: int) -> int:
        """Move queued jobs of the batch's key that still fit into ``batch``, oldest first; the new row count."""
        key = batch[0][0].batch_key
        kept: collections.deque = collections.deque()
        while self._pending:
            job, future = self._pending.popleft()
            if job.batch_key != key or rows + job.rows > limit:
                kept.append((job, future))
            elif future.set_running_or_notify_cancel():
                batch.append((job, future))
                rows += job.rows
            else:
                self._metrics.drop()
        self._pending = kept
        return rows

    def _call(self, batch: list[tuple[Job, Future]]) -> None:
        start = time.perf_counter()
        try:
            results = self._run([job for job, _ in batch])
        except Exception as exc:  # every caller of the call gets the error
            for _, future in batch:
                future.set_exception(exc)
            return
        finally:
            self.calls += 1
            self.call_seconds += time.perf_counter() - start
        self._metrics.pipeline_call(results[0].batch_rows, results[0].timings)
        for (_, future), result in zip(batch, results):
            future.set_result(result)
