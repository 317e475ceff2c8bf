"""The ``benchmarks.pipeline`` flags for the GPU backends installed here (``make bench-gpu``, ``make gpu-check``).

    python -m benchmarks.gpu_flags    # prints "--engines" or nothing

``--engines`` only where a TensorRT flavour can build for and run on GPU 0 (``pipeline.engine_settings``:
standard TensorRT, or TensorRT-RTX where it targets this GPU); otherwise nothing, with the reason on stderr, so
the benchmark times ONNX Runtime CUDA alone instead of asking for a TensorRT that is not there. With no GPU
backend at all, ``benchmarks.pipeline`` itself refuses before any timing.
"""

from __future__ import annotations

import sys

from genrt.errors import GenrtError


def pipeline_flags() -> list[str]:
    """``["--engines"]`` where TensorRT serves this GPU, else ``[]`` (why: on stderr)."""
    import torch

    from benchmarks.compare_backends import runtime_backends
    from benchmarks.pipeline import engine_settings

    if not torch.cuda.is_available() or "tensorrt" not in runtime_backends(torch.device("cuda")):
        print("benchmarks.gpu_flags: no TensorRT rows: no CUDA GPU, or neither tensorrt nor tensorrt_rtx with "
              "cuda-python is installed", file=sys.stderr)
        return []
    try:
        engine_settings()
    except GenrtError as error:
        print(f"benchmarks.gpu_flags: no TensorRT rows: {error.one_line()}", file=sys.stderr)
        return []
    return ["--engines"]


if __name__ == "__main__":
    print(" ".join(pipeline_flags()))
