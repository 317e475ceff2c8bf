"""Engine backends: pick one and open a runner per component.

``backend`` is ``"auto"`` (the fastest available: TensorRT when the export has engines this GPU can
run, else ONNX Runtime CUDA, else ONNX Runtime CPU; ``choice.resolve_backend`` says why), ``"tensorrt"``,
``"onnxruntime-cuda"`` or ``"onnxruntime-cpu"``. Importing this package imports no engine library; each
backend imports its own lazily.
"""

from __future__ import annotations

import logging
from typing import Iterable

from genrt.errors import GenrtError
from genrt.manifest import ComponentEntry, Manifest
from genrt.runtime.backends.base import Runner
from genrt.runtime.backends.choice import BACKENDS, FALLBACK, BackendChoice, resolve_backend
from genrt.runtime.backends.ort_options import OrtOptions

log = logging.getLogger(__name__)


class Runners:
    """The opened runners of one pipeline, by component name; closing it releases them all.

    TensorRT runners share one :class:`~genrt.runtime.backends.tensorrt.TensorRTDevice`. ``choice`` says which
    backend ``backend`` resolved to and why; with ``"auto"``, a backend whose runners fail to open (ONNX Runtime
    CUDA without its libraries, an engine TensorRT refuses) gives way to the next one in ``FALLBACK`` order, and
    the reason says so. ``device_id`` is the GPU of the CUDA backends; ``cuda_graphs=False`` runs their calls
    without CUDA graphs (each runner's ``cuda_graphs`` says how its calls run). ``threads`` and ``ort_options``
    (spinning, memory arena, optimisation level) open the ONNX Runtime sessions.
    """

    def __init__(self, manifest: Manifest, names: Iterable[str], backend: str = "auto", threads: int = 0,
                 device_id: int = 0, cuda_graphs: bool = True, ort_options: OrtOptions = OrtOptions()):
        specs = [manifest.component(name) for name in names]
        choice = resolve_backend(backend, manifest, [spec.name for spec in specs], device_id)
        self.threads = threads
        self.ort_options = ort_options
        self.device_id = device_id
        self.cuda_graphs = cuda_graphs
        self._device = None
        self._flavours: list[str] = []
        self._runners: dict[str, Runner] = {}
        self._graphs: list[Runner] = []  # runners of graphs the runtime built (``open_graph``)
        candidates = FALLBACK[FALLBACK.index(choice.backend):] if backend == "auto" else (choice.backend,)
        passed = []
        for candidate in candidates:
            self.backend = candidate
            try:
                self._open(specs)
                break
            except GenrtError as error:
                if candidate == candidates[-1]:
                    raise
                passed.append(f"not {candidate}: {error.message}")
        self.choice: BackendChoice = BackendChoice(self.backend, "; ".join([choice.reason, *passed]))
        if passed:  # a backend that looked usable did not open: say so, never fall back silently
            log.warning("genrt: running on %s", self.choice)

    def _open(self, specs: list[ComponentEntry]) -> None:
        """Open the runners of ``specs`` on ``self.backend``; on any error close what opened and re-raise."""
        try:
            if self.backend == "tensorrt":
                from genrt.runtime.backends.tensorrt import TensorRTDevice, available_flavours

                self._flavours = available_flavours()
                if not self._flavours:
                    raise GenrtError("backend 'tensorrt' needs a CUDA GPU, cuda-python and tensorrt or tensorrt_rtx",
                                     fix="pip install 'genrt[trt]' or 'genrt[trt-rtx]', or pick another backend")
                self._device = TensorRTDevice(self.device_id)
            for spec in specs:
                self._runners[spec.name] = self._runner(spec, None).load()
        except BaseException:
            self.close()
            raise

    def _runner(self, spec: ComponentEntry, model: bytes | None) -> Runner:
        if self.backend == "tensorrt":
            from genrt.runtime.backends.tensorrt import TensorRTRunner

            return TensorRTRunner(spec, self._device, self._flavours, model=model, cuda_graphs=self.cuda_graphs)
        from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner

        device = "cuda" if self.backend == "onnxruntime-cuda" else "cpu"
        return OnnxRuntimeRunner(spec, device=device, device_id=self.device_id, threads=self.threads, model=model,
                                 cuda_graphs=self.cuda_graphs, options=self.ort_options)

    def open_graph(self, graph) -> Runner:
        """A runner, on this backend and device, of a graph the runtime built itself (``graph.spec`` describes
        its tensors, ``graph.model`` is the serialized ONNX; a loop's step graph). Closed with the others."""
        runner = self._runner(graph.spec, graph.model).load()
        self._graphs.append(runner)
        return runner

    def __getitem__(self, name: str) -> Runner:
        return self._runners[name]

    def __contains__(self, name: str) -> bool:
        return name in self._runners

    def close(self) -> None:
        for runner in [*self._graphs, *self._runners.values()]:
            runner.close()
        self._runners.clear()
        self._graphs.clear()
        if self._device is not None:
            self._device.close()
            self._device = None

    def __enter__(self) -> "Runners":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["BACKENDS", "BackendChoice", "Runner", "Runners", "resolve_backend"]
