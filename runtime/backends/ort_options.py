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
"""

from __future__ import annotations

from dataclasses import dataclass

from genrt.errors import InputError

# Graph optimisation level names -> ``onnxruntime.GraphOptimizationLevel`` member names
OPTIMIZATION_LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime session options of a pipeline's sessions (see the module docstring for why these defaults)."""

    spinning: bool = True  # intra-op worker threads spin-wait for work between parallel regions
    memory_arena: bool = True  # ONNX Runtime's CPU memory arena keeps activation buffers between calls
    optimization: str = "all"  # graph optimisation level, one of OPTIMIZATION_LEVELS

    def __post_init__(self):
        for name in ("spinning", "memory_arena"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"OrtOptions({name}={getattr(self, name)!r}) is not a bool",
                                 fix=f"pass {name}=True or {name}=False")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise InputError(f"unknown ONNX Runtime optimisation level '{self.optimization}'",
                             fix=f"use one of {', '.join(OPTIMIZATION_LEVELS)}")

    def session_options(self, ort, threads: int = 0):
        """``ort.SessionOptions`` with these settings and ``threads`` intra-op threads (0: ONNX Runtime's default,
        one per physical core)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[self.optimization])
        options.enable_cpu_mem_arena = self.memory_arena
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        return options


# The graphs the runtime builds to copy device tensors must run exactly as written.
UNOPTIMIZED = OrtOptions(optimization="none")
