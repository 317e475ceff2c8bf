"""One ONNX Runtime session in another Python's process, called over its stdin and stdout: a contender whose
onnxruntime build cannot live in the timing process (``onnxruntime-openvino`` installs the same ``onnxruntime``
module as the CPU build, so it gets an environment of its own: ``make openvino-env``).

``benchmarks.cpu_sd15_unet --openvino-python PYTHON`` times ONNX Runtime's OpenVINO execution provider this way:
the child opens the graph as the runtime does (``genrt.runtime.backends.onnxruntime.open_session`` with the given
``OrtOptions``), reopens it when the thread count changes, and answers each call with the named output. One call is
a pickled message each way (the output float32 back), well under a millisecond against seconds of U-Net.

    python -m benchmarks.child_session    # the child's side: requests on stdin, answers on stdout
"""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from genrt.runtime.backends.ort_options import OrtOptions
from genrt.runtime.timing import peak_host_memory_mb

ROOT = Path(__file__).resolve().parents[1]


def _serve(requests, answers) -> None:
    """Child: ("open", (graph, options, threads, feeds, output)) opens the session (answer: None), ("threads", n)
    reopens it with n threads unless it has n already (answer: None), ("peak", None) answers the peak RSS in MB,
    ("call", None) the output; until None."""
    from genrt.runtime.backends.onnxruntime import open_session

    session = graph = options = feeds = output = threads = None
    while (message := pickle.load(requests)) is not None:
        kind, value = message
        answer = None
        if kind == "open" or (kind == "threads" and value != threads):  # the same count keeps the open session
            if kind == "open":
                graph, options, threads, feeds, output = value
            else:
                threads = value
            session = None  # the old session's arena goes before the new one is opened
            session = open_session(graph, "cpu", threads=threads, options=OrtOptions(**options))
        elif kind == "peak":
            answer = peak_host_memory_mb()
        elif kind == "call":
            answer = session.run([output], feeds)[0].astype(np.float32)
        pickle.dump(answer, answers)
        answers.flush()


class ChildSession:
    """``graph`` opened with ``options`` in a process of ``python`` (an interpreter with genrt installed), run on
    ``feeds`` for its ``output``. The constructor returns once the session is open (``threads`` intra-op threads)."""

    def __init__(self, python: str, graph: Path, options: OrtOptions, feeds: dict[str, np.ndarray], output: str,
                 threads: int = 1):
        self._process = subprocess.Popen([python, "-m", "benchmarks.child_session"], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._request("open", (str(graph), dataclasses.asdict(options), threads, feeds, output))

    def _request(self, kind: str, value):
        try:
            pickle.dump((kind, value), self._process.stdin)
            self._process.stdin.flush()
            return pickle.load(self._process.stdout)
        except (EOFError, BrokenPipeError):
            code = self._process.wait()
            raise RuntimeError(f"the child session's process ({self._process.args[0]}) exited with code {code}; "
                               "its error is above") from None

    def set_threads(self, count: int) -> None:
        self._request("threads", count)

    def peak_mb(self) -> float:
        """The child's peak resident memory so far, in MB."""
        return self._request("peak", None)

    def __call__(self) -> np.ndarray:
        """One session call in the child; its output as float32."""
        return self._request("call", None)

    def close(self) -> None:
        if self._process.poll() is None:
            pickle.dump(None, self._process.stdin)
            self._process.stdin.close()
        self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> "ChildSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    answers, sys.stdout = sys.stdout.buffer, sys.stderr  # stray prints go to stderr, not into the answers
    _serve(sys.stdin.buffer, answers)
