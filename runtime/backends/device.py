"""Tensors that stay where a runner runs: the one device-tensor type every backend speaks.

A runner's ``infer(feeds, to_host=...)`` takes host numpy arrays or :class:`DeviceTensor` objects of its
own backend and device, and returns numpy only for the outputs the caller asks for on the host; the rest
come back as device tensors that can be fed straight into the next call (the U-Net output into a step
graph, the VQGAN prior's cache into its next call) without a host round trip. Each backend wraps its
own storage: ``OrtTensor`` (an ONNX Runtime ``OrtValue``) and ``CudaTensor`` (a TensorRT device buffer).
"""

from __future__ import annotations

import abc

import numpy as np


class DeviceTensor(abc.ABC):
    """A tensor held by a backend on ``device`` ("cpu", "cuda:0", ...): shape, dtype, one copy to the host."""

    backend: str = "abstract"  # the runner family that reads it: "onnxruntime" or "tensorrt"

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device: str):
        self.shape = tuple(int(size) for size in shape)
        self.dtype = np.dtype(dtype)
        self.device = device

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @abc.abstractmethod
    def to_host(self) -> np.ndarray:
        """One device -> host copy (waits for the work that writes the tensor)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"
