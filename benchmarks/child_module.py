"""One network in a child process, called over a pipe: a contender whose weights stay out of the timing process.

``benchmarks.cpu_sd15_unet`` times eager bf16 this way: the child builds the float32 network, converts it to
bf16 in place (``nn.Module.to`` replaces the parameters one by one, so the float32 copy is gone once it is done)
and then holds only the bf16 weights, while the parent holds the float32 network and the ONNX Runtime sessions.
The parent calls it between its own contenders (``benchmarks.compare_backends.time_interleaved``): one call is a
message each way and the output (float32 numpy) back, well under a millisecond against seconds of U-Net.
"""

from __future__ import annotations

import multiprocessing
from typing import Callable

import numpy as np
import torch

from benchmarks.torch_timing import cast_inputs
from genrt.runtime.timing import peak_host_memory_mb


def _serve(connection, build: Callable[[], torch.nn.Module], dtype: torch.dtype, inputs: dict[str, np.ndarray]) -> None:
    """Child: build, convert, then answer ("threads", n) with None, ("peak", None) with its peak RSS in MB and
    ("call", None) with the output, until None."""
    module = build().eval().to(dtype)
    feeds = cast_inputs({name: torch.from_numpy(array) for name, array in inputs.items()}, dtype)
    connection.send(peak_host_memory_mb())
    while (message := connection.recv()) is not None:
        kind, value = message
        if kind == "threads":
            torch.set_num_threads(value)
            connection.send(None)
        elif kind == "peak":
            connection.send(peak_host_memory_mb())
        else:
            with torch.inference_mode():
                connection.send(module(**feeds).float().numpy())


class ChildModule:
    """``build()``'s network in ``dtype`` in a child process (spawned: ``build`` must pickle, e.g. a
    ``functools.partial`` of a module-level function) returning one tensor, run on ``inputs`` (floating ones cast
    to ``dtype``). The constructor returns once the child is ready."""

    def __init__(self, build: Callable[[], torch.nn.Module], dtype: torch.dtype, inputs: dict[str, np.ndarray]):
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, build, dtype, inputs), daemon=True)
        self._process.start()
        child_end.close()
        self.ready_peak_mb: float = self._receive()  # the child's peak RSS once converted (float32 build included)

    def _receive(self):
        try:
            return self._connection.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the child process exited (exit code {self._process.exitcode})") from None

    def set_threads(self, count: int) -> None:
        self._connection.send(("threads", count))
        self._receive()

    def peak_mb(self) -> float:
        """The child's peak resident memory so far, in MB."""
        self._connection.send(("peak", None))
        return self._receive()

    def __call__(self) -> np.ndarray:
        """One forward pass in the child; its output as float32."""
        self._connection.send(("call", None))
        return self._receive()

    def close(self) -> None:
        if self._process.is_alive():
            self._connection.send(None)
        self._process.join()
        self._connection.close()

    def __enter__(self) -> "ChildModule":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
