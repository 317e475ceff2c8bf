"""Engine backends: pick one and open a runner per component.

``backend`` is ``"auto"`` (the fastest available: TensorRT when the export has engines this machine
can run, else ONNX Runtime CUDA, else ONNX Runtime CPU), ``"tensorrt"``, ``"onnxruntime-cuda"`` or
``"onnxruntime-cpu"``. Importing this package imports no engine library; each backend imports its
own lazily.
"""

from __future__ import annotations

from typing import Iterable

from genrt.errors import GenrtError
from genrt.runtime.backends.base import Runner
from genrt.runtime.manifest import Manifest

BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


def resolve_backend(backend: str, manifest: Manifest) -> str:
    """The concrete backend ``backend`` stands for on this machine (``auto`` picks the fastest)."""
    from genrt.runtime.backends.onnxruntime import cuda_available
    from genrt.runtime.backends.tensorrt import available_flavours

    if backend not in BACKENDS:
        raise GenrtError(f"unknown backend '{backend}'", fix=f"use one of: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    has_engines = all(spec.engines for spec in manifest.components.values())
    if has_engines and available_flavours():
        return "tensorrt"
    return "onnxruntime-cuda" if cuda_available() else "onnxruntime-cpu"


class Runners:
    """The opened runners of one pipeline, by component name; closing it releases them all.

    TensorRT runners share one :class:`~genrt.runtime.backends.tensorrt.TensorRTDevice`.
    """

    def __init__(self, manifest: Manifest, names: Iterable[str], backend: str = "auto", threads: int = 0):
        self.backend = resolve_backend(backend, manifest)
        specs = [manifest.component(name) for name in names]
        self._device = None
        self._runners: dict[str, Runner] = {}
        try:
            if self.backend == "tensorrt":
                from genrt.runtime.backends.tensorrt import TensorRTDevice, TensorRTRunner, available_flavours

                flavours = available_flavours()
                if not flavours:
                    raise GenrtError("backend 'tensorrt' needs a CUDA GPU, cuda-python and tensorrt or tensorrt_rtx",
                                     fix="pip install 'genrt[trt]' or 'genrt[trt-rtx]', or pick another backend")
                self._device = TensorRTDevice()
                for spec in specs:
                    self._runners[spec.name] = TensorRTRunner(spec, self._device, flavours).load()
            else:
                from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner

                device = "cuda" if self.backend == "onnxruntime-cuda" else "cpu"
                for spec in specs:
                    self._runners[spec.name] = OnnxRuntimeRunner(spec, device=device, threads=threads).load()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Runner:
        return self._runners[name]

    def __contains__(self, name: str) -> bool:
        return name in self._runners

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        if self._device is not None:
            self._device.close()
            self._device = None

    def __enter__(self) -> "Runners":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["BACKENDS", "Runner", "Runners", "resolve_backend"]
