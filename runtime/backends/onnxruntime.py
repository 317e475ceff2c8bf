"""ONNX Runtime runners: CPU, and CUDA with I/O binding.

The CUDA runner binds every input as an OrtValue on the GPU and lets ONNX Runtime allocate the
outputs there too, so the graph's intermediate and output tensors never touch the host until one
copy back at the end. CUDA needs ``onnxruntime-gpu`` (extra ``gpu``).
"""

from __future__ import annotations

import numpy as np

from genrt.errors import GenrtError, require
from genrt.runtime.backends.base import Runner
from genrt.runtime.manifest import ComponentSpec, verified_file

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def cuda_available() -> bool:
    """Whether the installed ONNX Runtime has its CUDA provider (a GPU is still needed at load)."""
    try:
        ort = require("onnxruntime", extra="gpu")
    except GenrtError:
        return False
    return CUDA_PROVIDER in ort.get_available_providers()


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
        ort = require("onnxruntime", extra="gpu" if self.device == "cuda" else "cpu")
        fix = "export the model again with `genrt export`"
        path = verified_file(self.spec.onnx, self.spec.sha256, fix=fix)
        if self.spec.external_data is not None:
            verified_file(self.spec.external_data, None, fix=fix)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.device == "cuda":
            if CUDA_PROVIDER not in ort.get_available_providers():
                raise GenrtError("the installed onnxruntime has no CUDA execution provider",
                                 fix="pip install 'genrt[gpu]' (onnxruntime-gpu) in place of onnxruntime")
            providers = [(CUDA_PROVIDER, {"device_id": self.device_id}), CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types; its message is the clue
            raise GenrtError(f"ONNX Runtime cannot load {path}: {exc}",
                             fix="export the model again with `genrt export`") from None

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self.spec.outputs]
        if self.device == "cpu":
            return dict(zip(names, self._session.run(names, feeds)))
        ort = require("onnxruntime", extra="gpu")
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id))
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def _close_impl(self) -> None:
        self._session = None
