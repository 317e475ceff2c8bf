"""A CUDA stream genrt creates for an ONNX Runtime CUDA session, so the session's work can be timed with CUDA events.

ONNX Runtime runs a CUDA session on a stream of its own unless the provider option ``user_compute_stream`` hands
it one (ONNX Runtime's CUDA execution provider documentation; CUDA graphs work on such a stream too). With
cuda-python installed (extra ``gpu``) each runner gets one: created on its GPU, passed to ONNX Runtime as an int
address, and timed per call with :class:`~genrt.runtime.timing.CudaEventTimer`. Without cuda-python the session
keeps ONNX Runtime's stream and the wall clock times it.
"""

from __future__ import annotations

from genrt.errors import GenrtError, require
from genrt.runtime.timing import CudaEventTimer


def cuda_runtime_or_none():
    """``cuda.bindings.runtime``, or None where cuda-python is not installed."""
    try:
        return require("cuda.bindings.runtime", extra="gpu")
    except GenrtError:
        return None


class RunnerStream:
    """One non-default CUDA stream on GPU ``device_id`` and the GPU time of the work between ``start`` and
    ``stop`` on it (``cudart``: ``cuda.bindings.runtime``)."""

    def __init__(self, cudart, device_id: int):
        self._cudart = cudart
        self._check(cudart.cudaSetDevice(device_id))  # a stream belongs to the device current at its creation
        self.stream = self._check(cudart.cudaStreamCreate())
        self.timer = CudaEventTimer(cudart, self._check, self.stream)

    @property
    def handle(self) -> int:
        """The stream's address, as ``user_compute_stream`` takes it."""
        return int(self.stream)

    def _check(self, result):
        error, *values = result
        if error != self._cudart.cudaError_t.cudaSuccess:
            raise GenrtError(f"CUDA error {error.name} on a runner stream",
                             fix="check the GPU with nvidia-smi and that no other process holds its memory")
        return values[0] if values else None

    def close(self) -> None:
        """Wait for the stream, then destroy its events and the stream."""
        self._check(self._cudart.cudaStreamSynchronize(self.stream))
        self.timer.close()
        self._check(self._cudart.cudaStreamDestroy(self.stream))
