"""How genrt opens ONNX Runtime sessions, beyond the thread count: the measured defaults and their overrides.

The defaults are ONNX Runtime's own, kept by measurement (``python -m benchmarks.cpu_session_options``: the tiny
components of every family, each variant against the defaults, interleaved call by call at 1 and 2 threads;
``benchmarks/results/cpu-session-options.json``, 2026-12-03, a 2-core host at load average 13-18):

- graph optimisation ``"all"`` (``ORT_ENABLE_ALL``): ``"extended"`` loses the NCHWc convolution layout and was
  slower on every U-Net (0.70-0.86x) and on the decoders (0.81-0.97x);
- the CPU memory arena on, and spinning worker threads on: neither change won consistently on that loaded host
  (no arena 0.81-1.40x, no spinning 0.84-1.49x across the U-Nets, within their spread; an earlier quieter run
  had no spinning 16x slower on millisecond graphs at 2 threads, 1.2 -> 20 ms). Where the cores are shared
  with other work, ``spinning=False`` gives them back between calls.

``genrt.runtime.load(DIR, ort_options=OrtOptions(spinning=False))`` overrides them for every session a
pipeline opens (CPU and CUDA); ``threads`` stays its own argument of ``load``.

CPU sessions run on ONNX Runtime's own kernels unless ``cpu_provider="openvino"`` puts them on OpenVINO's execution
provider (``onnxruntime-openvino`` installed in place of ``onnxruntime``; ONNX Runtime's kernels take the nodes it
leaves). ``openvino_precision="bf16"`` lets OpenVINO compute the float32 parts in bfloat16, which hosts with AMX or
AVX512-BF16 run several times faster (the parity bound is then bf16's): ``benchmarks/cpu_sd15_unet.py`` measured the
real-size SD 1.5 U-Net there, see README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from genrt.errors import InputError

# Graph optimisation level names -> ``onnxruntime.GraphOptimizationLevel`` member names
OPTIMIZATION_LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}
CPU_PROVIDERS = ("onnxruntime", "openvino")  # who runs a CPU session's kernels
OPENVINO_PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT on the CPU


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime session options of a pipeline's sessions (see the module docstring for why these defaults)."""

    spinning: bool = True  # intra-op worker threads spin-wait for work between parallel regions
    memory_arena: bool = True  # ONNX Runtime's CPU memory arena keeps activation buffers between calls
    optimization: str = "all"  # graph optimisation level, one of OPTIMIZATION_LEVELS
    cpu_provider: str = "onnxruntime"  # one of CPU_PROVIDERS: ONNX Runtime's own kernels, or OpenVINO's
    openvino_precision: str = "f32"  # one of OPENVINO_PRECISIONS: what OpenVINO computes float32 nodes in

    def __post_init__(self):
        for name in ("spinning", "memory_arena"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"OrtOptions({name}={getattr(self, name)!r}) is not a bool",
                                 fix=f"pass {name}=True or {name}=False")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise InputError(f"unknown ONNX Runtime optimisation level '{self.optimization}'",
                             fix=f"use one of {', '.join(OPTIMIZATION_LEVELS)}")
        if self.cpu_provider not in CPU_PROVIDERS:
            raise InputError(f"unknown CPU provider '{self.cpu_provider}'", fix=f"use one of {', '.join(CPU_PROVIDERS)}")
        if self.openvino_precision not in OPENVINO_PRECISIONS:
            raise InputError(f"unknown OpenVINO precision '{self.openvino_precision}'",
                             fix=f"use one of {', '.join(OPENVINO_PRECISIONS)}")

    def session_options(self, ort, threads: int = 0):
        """``ort.SessionOptions`` with these settings and ``threads`` intra-op threads (0: ONNX Runtime's default,
        one per physical core)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[self.optimization])
        options.enable_cpu_mem_arena = self.memory_arena
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        return options

    def openvino_provider_options(self, threads: int = 0) -> dict[str, str]:
        """The OpenVINO execution provider's options: the CPU device, ``openvino_precision`` and ``threads``
        inference threads (0: OpenVINO's default)."""
        hint = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": self.openvino_precision}})
        return {"device_type": "CPU", "load_config": hint, **({"num_of_threads": str(threads)} if threads else {})}


# The graphs the runtime builds to copy device tensors must run exactly as written.
UNOPTIMIZED = OrtOptions(optimization="none")
