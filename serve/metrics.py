"""Prometheus metrics of a server, rendered in the text exposition format (version 0.0.4).

Counters, gauges and histograms with labels, thread-safe; ``render()`` is what ``GET /metrics`` returns.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # images per pipeline call


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; one more for +Inf
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """The server's metrics; every method may be called from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}  # HTTP status -> requests answered
        self.stage_seconds: dict[str, float] = {}  # pipeline stage -> seconds summed over calls
        self.queue_depth = 0  # jobs waiting for a pipeline call
        self.dropped = 0  # queued jobs dropped because their caller went away or timed out
        self.latency = _Histogram(LATENCY_BUCKETS)  # seconds from request to response
        self.batch_rows = _Histogram(BATCH_BUCKETS)  # images per pipeline call

    def request(self, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[str(status)] = self.requests.get(str(status), 0) + 1
            self.latency.observe(seconds)

    def pipeline_call(self, rows: int, timings: dict[str, float]) -> None:
        with self._lock:
            self.batch_rows.observe(rows)
            for stage, seconds in timings.items():
                self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def set_queue_depth(self, depth: int) -> None:
        with self._lock:
            self.queue_depth = depth

    def drop(self) -> None:
        with self._lock:
            self.dropped += 1

    def render(self) -> str:
        with self._lock:
            lines = _family("genrt_requests_total", "counter", "HTTP requests answered, by status",
                            [(f'status="{status}"', count) for status, count in sorted(self.requests.items())])
            lines += _histogram("genrt_request_duration_seconds", "seconds from request to response", self.latency)
            lines += _family("genrt_queue_depth", "gauge", "jobs waiting for a pipeline call", [("", self.queue_depth)])
            lines += _family("genrt_dropped_jobs_total", "counter", "queued jobs dropped (caller gone or timed out)",
                             [("", self.dropped)])
            lines += _histogram("genrt_batch_images", "images per pipeline call", self.batch_rows)
            lines += _family("genrt_stage_seconds_total", "counter", "pipeline seconds per stage",
                             [(f'stage="{stage}"', seconds) for stage, seconds in sorted(self.stage_seconds.items())])
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [f"{name}{{{labels}}} {_number(value)}" if labels else f"{name} {_number(value)}"
                    for labels, value in samples]


def _histogram(name: str, help_text: str, histogram: _Histogram) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    counts = histogram.counts or [0] * (len(histogram.buckets) + 1)
    cumulative = 0
    for bound, count in zip((*histogram.buckets, math.inf), counts):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{"+Inf" if bound == math.inf else _number(bound)}"}} {cumulative}')
    return lines + [f"{name}_sum {_number(histogram.total)}", f"{name}_count {histogram.count}"]


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
