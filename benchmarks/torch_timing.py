"""PyTorch-side measurements for the backend comparison: eager, reduced precision, torch.compile, FLOPs."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


SHORT_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def count_flops(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Floating-point operations of one forward pass (matmuls and convolutions, counted by torch)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(**inputs)
    return int(counter.get_total_flops())


def cast_inputs(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating inputs to ``dtype``; integer inputs (token ids, indices) stay as they are."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def torch_variants(
    module: torch.nn.Module, inputs: dict[str, torch.Tensor], *, half_dtype: torch.dtype, compile: bool
) -> dict[str, tuple[torch.nn.Module, dict[str, torch.Tensor]]]:
    """The PyTorch ways of running ``module``: eager fp32, eager in ``half_dtype``, and torch.compile (fp32 on
    CPU, ``half_dtype`` on GPU)."""
    variants = {"torch-eager-fp32": (module, inputs)}
    half = copy.deepcopy(module).to(half_dtype)
    half_inputs = cast_inputs(inputs, half_dtype)
    variants[f"torch-eager-{SHORT_DTYPE_NAMES[half_dtype]}"] = (half, half_inputs)
    if compile:
        on_gpu = next(module.parameters()).device.type == "cuda"
        base, base_inputs = (half, half_inputs) if on_gpu else (module, inputs)
        variants["torch-compile"] = (torch.compile(base), base_inputs)
    return variants
