"""Which GPUs an engine build targets: the TensorRT flavour and its compute capabilities.

Standard TensorRT builds for the GPU it runs on, and nothing else; its engines record that GPU's
compute capability. TensorRT-RTX builds ahead of time for chosen compute capabilities (also without
a GPU): by default for the local GPU when it is one of its targets, else (no GPU) for the set it is
portable across. On a GPU TensorRT-RTX cannot serve (Hopper, SM 9.0, is not among TensorRT-RTX 1.7's
targets) it refuses, naming what does run there.
"""

from __future__ import annotations

import importlib.util

from genrt.errors import InputError

# Compute capabilities TensorRT-RTX 1.7 can target -> its ComputeCapability member names.
RTX_COMPUTE_CAPABILITIES = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89",
                            "12.0": "SM120", "12.1": "SM121"}
# What a TensorRT-RTX engine is portable across when no GPU says otherwise (its documented default set).
RTX_PORTABLE = ("8.6", "8.9", "12.0")
NOT_ON_THIS_GPU = ("build with standard TensorRT on this GPU (--trt tensorrt, pip install 'genrt[trt]'), "
                   "or run the ONNX graphs with backend onnxruntime-cuda (pip install 'genrt[gpu]')")


def local_compute_capability() -> str | None:
    """The compute capability of GPU 0 as "major.minor" (e.g. "8.6"), or None without a usable CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def resolve_flavour(requested: str, local: str | None) -> str:
    """'auto' -> standard TensorRT where it is installed and a GPU exists, else TensorRT-RTX."""
    if requested != "auto":
        return requested
    has_trt = importlib.util.find_spec("tensorrt") is not None
    return "tensorrt" if has_trt and local is not None else "tensorrt_rtx"


def build_targets(flavour: str, requested: tuple[str, ...] | None, local: str | None) -> tuple[str, ...]:
    """The compute capabilities to build for and record.

    ``requested``: the user's ``--compute-capability`` list, or None for the default. ``local``: this
    machine's GPU (:func:`local_compute_capability`).
    """
    if flavour == "tensorrt":
        if local is None:
            raise InputError("standard TensorRT needs an NVIDIA GPU to build", fix="use --trt tensorrt_rtx")
        if requested is not None and tuple(requested) != (local,):
            raise InputError(f"standard TensorRT builds only for the GPU it runs on (compute capability {local}), "
                             f"not {', '.join(requested) or '(none)'}",
                             fix="drop --compute-capability, or use --trt tensorrt_rtx for other GPUs")
        return (local,)
    if requested is not None:
        unknown = [cc for cc in requested if cc not in RTX_COMPUTE_CAPABILITIES]
        if unknown or not requested:
            raise InputError(f"TensorRT-RTX cannot target compute capabilities {', '.join(unknown) or '(none)'}",
                             fix=f"choose from {', '.join(RTX_COMPUTE_CAPABILITIES)}; "
                                 "for another GPU build with --trt tensorrt on it")
        return tuple(requested)
    if local is None:
        return RTX_PORTABLE
    if local not in RTX_COMPUTE_CAPABILITIES:
        raise InputError(f"TensorRT-RTX cannot build engines for this GPU (compute capability {local}; "
                         f"it targets {', '.join(RTX_COMPUTE_CAPABILITIES)})", fix=NOT_ON_THIS_GPU)
    return (local,)
