"""CUDA-graph replay of a static TensorRT engine as a small state machine.

Per set of bound addresses (``key``, inputs then outputs; a graph bakes them in, so a buffer that moves
simply makes a new key): the first call runs eagerly (TensorRT wants one ordinary
``execute_async_v3`` after the shapes are set), the second captures that run as a graph, and later calls
launch the graph. A runner that alternates output buffers has two keys, so at most ``MAX_GRAPHS`` graphs are
kept; a key beyond them drops the others. A capture that fails disables capture for good, with the reason
(``disabled``): it is not tried again on every call. The stream never stays in capture mode: the capture is
ended in a ``finally`` whatever the enqueue raised.
"""

from __future__ import annotations

from typing import Callable, Hashable

# Graphs kept per runner (one per output-buffer parity)
MAX_GRAPHS = 2


class GraphReplay:
    """Eager run, capture or replay for one execution context on one stream (``cudart``: cuda.bindings.runtime)."""

    def __init__(self, cudart, check: Callable, disabled: str | None = None):
        self._cudart = cudart
        self._check = check
        self.disabled = disabled  # why calls are never captured (None: capture is on)
        self._warm: set[Hashable] = set()  # keys run eagerly once
        self._graphs: dict[Hashable, tuple] = {}  # key -> (cudaGraph_t, cudaGraphExec_t)

    @property
    def graphs(self) -> int:
        return len(self._graphs)

    def run(self, key: Hashable, enqueue: Callable[[], bool], stream) -> bool:
        """Run ``enqueue`` (one ``execute_async_v3`` on ``stream``, False on failure) for the bound addresses
        ``key``: eagerly, captured, or as the graph captured before. False when TensorRT's enqueue failed."""
        if key in self._graphs:
            self._check(self._cudart.cudaGraphLaunch(self._graphs[key][1], stream))
            return True
        if self.disabled is not None or key not in self._warm:
            if self.disabled is None:
                self._warm.add(key)
            return enqueue()
        if len(self._graphs) >= MAX_GRAPHS:
            self.clear()
        return self._capture(key, enqueue, stream)

    def _capture(self, key: Hashable, enqueue: Callable[[], bool], stream) -> bool:
        cudart = self._cudart
        success = cudart.cudaError_t.cudaSuccess
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal  # other threads' work is not captured
        self._check(cudart.cudaStreamBeginCapture(stream, mode))
        problem = None
        try:
            if not enqueue():
                problem = "execute_async_v3 returned False during capture"
        except Exception as exc:  # the library's own exception types; the reason is kept
            problem = f"the enqueue raised {type(exc).__name__}: {exc}"
        finally:
            end_error, graph = cudart.cudaStreamEndCapture(stream)
        captured = graph if end_error == success else None
        if problem is None and captured is None:
            problem = f"cudaStreamEndCapture: {end_error}"
        if problem is None:
            error, executable = cudart.cudaGraphInstantiate(captured, 0)
            if error == success:
                self._graphs[key] = (captured, executable)
                self._check(cudart.cudaGraphLaunch(executable, stream))
                return True
            problem = f"cudaGraphInstantiate: {error}"
        if captured is not None:
            self._check(cudart.cudaGraphDestroy(captured))
        self.disabled = f"CUDA-graph capture failed ({problem}); running without graphs"
        self.clear()
        return enqueue()  # the captured work never ran: run it now, eagerly

    def clear(self) -> None:
        """Destroy every graph (the activation block moved, or the runner closes)."""
        for graph, executable in self._graphs.values():
            self._check(self._cudart.cudaGraphExecDestroy(executable))
            self._check(self._cudart.cudaGraphDestroy(graph))
        self._graphs.clear()
        self._warm.clear()
