"""Which backend runs an export here, and why.

``backend="auto"`` tries, in order: TensorRT, when every component to open has an engine this GPU and this
TensorRT can run; ONNX Runtime CUDA, when its CUDA provider is installed and the driver sees a GPU; ONNX
Runtime on the CPU. The choice carries the reasons the faster ones were passed over; only when none can
run is it an error. A named backend is taken as asked (its runner says what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from genrt.errors import GenrtError, require
from genrt.manifest import Manifest
from genrt.runtime.backends.onnxruntime import cuda_missing

BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
# What "auto" tries, fastest first
FALLBACK = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


@dataclass(frozen=True)
class BackendChoice:
    """The concrete backend and why it was chosen."""

    backend: str  # "tensorrt", "onnxruntime-cuda" or "onnxruntime-cpu"
    reason: str  # one line: what was asked, and why faster backends were passed over

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"


def resolve_backend(backend: str, manifest: Manifest, names: Sequence[str] | None = None,
                    device_id: int = 0) -> BackendChoice:
    """The backend ``backend`` stands for on this machine for the components ``names`` (None: all)."""
    if backend not in BACKENDS:
        raise GenrtError(f"unknown backend '{backend}'", fix=f"use one of: {', '.join(BACKENDS)}")
    if backend != "auto":
        return BackendChoice(backend, "as asked")
    passed = []
    engines = _engines_missing(manifest, list(manifest.components) if names is None else list(names), device_id)
    if engines is None:
        return BackendChoice("tensorrt", "auto: engines for this GPU")
    passed.append(f"not tensorrt: {engines}")
    cuda = cuda_missing()
    if cuda is None:
        return BackendChoice("onnxruntime-cuda", "auto: " + "; ".join(passed))
    passed.append(f"not onnxruntime-cuda: {cuda}")
    try:
        require("onnxruntime", extra="cpu")
    except GenrtError:
        raise GenrtError(f"no backend can run {manifest.root}: {'; '.join(passed)}; onnxruntime is not installed",
                         fix="pip install 'genrt[cpu]' (or 'genrt[gpu]', 'genrt[trt]')") from None
    return BackendChoice("onnxruntime-cpu", "auto: " + "; ".join(passed))


def _engines_missing(manifest: Manifest, names: list[str], device_id: int) -> str | None:
    """Why TensorRT cannot run every component in ``names`` here (None: it can)."""
    from genrt.runtime.backends import gpu
    from genrt.runtime.backends.tensorrt import available_flavours, pick_engine

    without = [name for name in names if not manifest.component(name).tensorrt_engines]
    if without:
        return f"no engines built for {', '.join(without)} (genrt build)"
    capability = gpu.compute_capability(device_id)
    if capability is None:
        return f"no CUDA GPU {device_id}"
    flavours = available_flavours()
    if not flavours:
        return "neither tensorrt nor tensorrt_rtx (with cuda-python) is installed"
    for name in names:
        try:
            pick_engine(manifest.component(name), flavours, capability)
        except GenrtError as error:
            return error.message
    return None
