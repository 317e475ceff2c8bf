"""ONNX Runtime runners: CPU, and CUDA with I/O binding.

The CUDA runner binds every input as an OrtValue on the GPU and lets ONNX Runtime allocate the
outputs there too, so the graph's intermediate and output tensors never touch the host until one
copy back at the end. CUDA needs ``onnxruntime-gpu`` (extra ``gpu``).

``infer_ortvalues`` is the device-resident path: feeds and results are ``OrtValue`` objects that stay
where they are (on the GPU for ``cuda``), so a denoising loop can chain the U-Net and a small step
graph (``genrt.runtime.resident``) without copying the latents to the host. It works on the CPU runner
too (the values then live in host memory), which is how the loop is tested without a GPU.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from genrt.errors import GenrtError, InputError, require
from genrt.runtime.backends.base import Runner
from genrt.runtime.manifest import ComponentSpec, verified_file

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# OrtValue.data_type() of each manifest dtype name
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
             "int32": "tensor(int32)", "int64": "tensor(int64)", "bool": "tensor(bool)"}


def cuda_available() -> bool:
    """Whether the installed ONNX Runtime has its CUDA provider (a GPU is still needed at load)."""
    try:
        ort = require("onnxruntime", extra="gpu")
    except GenrtError:
        return False
    return CUDA_PROVIDER in ort.get_available_providers()


def open_session(model, device: str, device_id: int = 0, threads: int = 0):
    """An ``InferenceSession`` of ``model`` (a path or serialized ONNX bytes) on ``device`` ("cpu" or "cuda")."""
    ort = require("onnxruntime", extra="gpu" if device == "cuda" else "cpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device == "cuda":
        if CUDA_PROVIDER not in ort.get_available_providers():
            raise GenrtError("the installed onnxruntime has no CUDA execution provider",
                             fix="pip install 'genrt[gpu]' (onnxruntime-gpu) in place of onnxruntime")
        providers = [(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]
    else:
        providers = [CPU_PROVIDER]
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def to_device(array: np.ndarray, device: str, device_id: int = 0):
    """One host -> device copy: an ``OrtValue`` holding ``array`` on ``device`` (on "cpu" it shares the
    array's memory, so keep the array alive while the value is used)."""
    ort = require("onnxruntime", extra="gpu" if device == "cuda" else "cpu")
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, device_id)


def run_bound(session, feeds: Mapping[str, object], output_names: Sequence[str], device: str,
              device_id: int = 0) -> list:
    """Run ``session`` with I/O binding: ``OrtValue`` feeds in, ``OrtValue`` outputs allocated on ``device``."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, value)
    for name in output_names:
        binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding)
    return list(binding.get_outputs())


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession`` for one component's ONNX graph.

    ``device="cpu"`` runs on the CPU with ``threads`` intra-op threads (0: ONNX Runtime's default);
    ``device="cuda"`` runs on GPU ``device_id`` with I/O binding.
    """

    def __init__(self, spec: ComponentSpec, device: str = "cpu", device_id: int = 0, threads: int = 0):
        super().__init__(spec)
        if device not in ("cpu", "cuda"):
            raise GenrtError(f"unknown ONNX Runtime device '{device}'", fix="use 'cpu' or 'cuda'")
        self.device = device
        self.device_id = device_id
        self.threads = threads
        self.backend_name = f"onnxruntime-{device}"
        self._session = None

    def _load_impl(self) -> None:
        fix = "export the model again with `genrt export`"
        path = verified_file(self.spec.onnx, self.spec.sha256, fix=fix)
        if self.spec.external_data is not None:
            verified_file(self.spec.external_data, None, fix=fix)
        try:
            self._session = open_session(str(path), self.device, self.device_id, self.threads)
        except GenrtError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own exception types; its message is the clue
            raise GenrtError(f"ONNX Runtime cannot load {path}: {exc}",
                             fix="export the model again with `genrt export`") from None

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self.spec.outputs]
        if self.device == "cpu":
            return dict(zip(names, self._session.run(names, feeds)))
        on_device = {name: to_device(array, "cuda", self.device_id) for name, array in feeds.items()}
        return {name: value.numpy() for name, value in zip(names, run_bound(self._session, on_device, names, "cuda",
                                                                            self.device_id))}

    def infer_ortvalues(self, feeds: Mapping[str, object]) -> dict:
        """Validated device-resident inference: ``{input name: OrtValue}`` -> ``{output name: OrtValue}``.

        Every feed must already live on this runner's device (``to_device``); the outputs are allocated
        there by ONNX Runtime and nothing is copied to the host.
        """
        if not self._loaded:
            self.load()
        self._check_ortvalues(feeds)
        names = [spec.name for spec in self.spec.outputs]
        with self._lock:
            start = time.perf_counter()
            outputs = run_bound(self._session, feeds, names, self.device, self.device_id)
            self.engine_seconds += time.perf_counter() - start
            self.calls += 1
        return dict(zip(names, outputs))

    def _check_ortvalues(self, feeds: Mapping[str, object]) -> None:
        """Raise InputError unless ``feeds`` are OrtValues on this device matching the component's inputs."""
        expected = [spec.name for spec in self.spec.inputs]
        if sorted(feeds) != sorted(expected):
            raise InputError(f"{self.spec.name}: fed {', '.join(sorted(feeds))}",
                             fix=f"feed exactly these inputs: {', '.join(expected)}")
        symbols: dict[str, tuple[int, str]] = {}
        for spec in self.spec.inputs:
            value = feeds[spec.name]
            if not hasattr(value, "device_name") or value.device_name().lower() != self.device:
                where = value.device_name() if hasattr(value, "device_name") else type(value).__name__
                raise InputError(f"{self.spec.name}: input '{spec.name}' is a {where} value, not on {self.device}",
                                 fix=f"copy it once with to_device(array, '{self.device}')")
            if value.data_type() != ORT_TYPES[spec.dtype]:
                raise InputError(f"{self.spec.name}: input '{spec.name}' is {value.data_type()}, expected {spec.dtype}",
                                 fix=f"cast it to {spec.dtype} before the copy to the device")
            self._check_shape(spec, tuple(value.shape()), symbols)

    def _close_impl(self) -> None:
        self._session = None
