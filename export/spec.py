"""The export contract of one component, as data: tensor names, dtypes, symbolic shapes, ranges.

A :class:`ComponentSpec` says everything the exporter, the engine builder and the parity checker
need about one exportable part of a model (a U-Net, a text encoder, a VQGAN decoder):

- ``module``: a factory returning an explicit ``nn.Module`` wrapper whose ``forward`` takes the
  inputs in the order of ``inputs`` and returns the outputs in the order of ``outputs``;
- ``inputs`` / ``outputs``: :class:`TensorSpec` with ints (fixed) or symbol names (dynamic);
- ``symbols``: the min/opt/max range of every symbol, derived from the config and the user's batch,
  resolution and sequence length;
- ``fp32_modules`` / ``fp32_ops``: the float32 islands kept when exporting in half precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from genrt import manifest
from genrt.errors import ConfigError, InputError

# Precision name -> torch dtype of the floating-point tensors of an exported graph (int8 graphs are float32 graphs
# with quantised Conv/MatMul inside: genrt.export.quantize).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                                      "int8": torch.float32}
# Dtype names used in specs and the manifest -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
# Named points of a symbol range; a point may also be a dict {symbol: value}.
POINTS = ("min", "opt", "max")


def float_dtype_name(precision: str) -> str:
    """'fp16' -> 'float16': the dtype name of float tensors for an export precision."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
    return str(PRECISIONS[precision]).removeprefix("torch.")


@dataclass(frozen=True)
class SymbolRange:
    """Range of one symbolic dimension; every value is a multiple of ``multiple_of``."""

    min: int  # smallest value an engine profile accepts
    opt: int  # value the engine is tuned for
    max: int  # largest value an engine profile accepts
    multiple_of: int = 1  # values must be multiples of this (a latent size of 8 pixels, ...)

    def __post_init__(self):
        if not 0 <= self.min <= self.opt <= self.max or self.max == 0:
            raise InputError(
                f"range min={self.min}, opt={self.opt}, max={self.max} is not ordered",
                fix="give 0 <= min <= opt <= max with max >= 1",
            )
        for value in (self.min, self.opt, self.max):
            if value % self.multiple_of:
                raise InputError(
                    f"range value {value} is not a multiple of {self.multiple_of}",
                    fix=f"choose sizes divisible by {self.multiple_of}",
                )

    def point(self, name: str) -> int:
        return {"min": self.min, "opt": self.opt, "max": self.max}[name]


@dataclass(frozen=True)
class TensorSpec(manifest.TensorSpec):
    """One graph input or output: the manifest's name, dtype name (a key of DTYPES) and shape, plus how its
    sample values are drawn. In the shape, ints are fixed and strings are symbols: an input's symbols have
    ranges in the component, an output's may be expressions of them ("H/8", "8*h"), which only name the axis."""

    # Sample values: integers and ``uniform`` floats are drawn from [low, high); other floats from N(0, 1).
    low: float = 0
    high: float = 1
    uniform: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"tensor {self.name!r} has unknown dtype {self.dtype!r}")

    @property
    def is_float(self) -> bool:
        return DTYPES[self.dtype].is_floating_point

    def symbols(self) -> list[str]:
        return [dim for dim in self.shape if isinstance(dim, str)]

    def concrete(self, values: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by ``values[symbol]``."""
        return tuple(values[dim] if isinstance(dim, str) else dim for dim in self.shape)


@dataclass(frozen=True)
class ComponentSpec:
    """Everything needed to export, build and check one component (see the module docstring)."""

    name: str  # component name in the manifest ("unet", "vae_decoder", ...)
    module: Callable[[], nn.Module]  # factory of the float32 wrapper module (inputs -> outputs in order)
    inputs: tuple[TensorSpec, ...]  # graph inputs, in forward() order
    outputs: tuple[TensorSpec, ...]  # graph outputs, in forward() order
    symbols: Mapping[str, SymbolRange]  # range of every symbol used in the inputs
    # fp32 island name -> module types computed in float32 inside a half-precision graph.
    fp32_modules: Mapping[str, tuple[type[nn.Module], ...]] = field(default_factory=dict)
    # ONNX op types whose computation is kept in float32 inside a half-precision graph.
    fp32_ops: tuple[str, ...] = ("Softmax",)
    # Integer outputs: inputs -> {output name: bool mask of entries where the float32 reference has a
    # near tie (two codebook entries almost equally close), so a half-precision graph may differ there.
    near_ties: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    # Relative-error bound added to the precision's bound in parity (deep stacks accumulate error).
    extra_tolerance: float = 0.0

    def __post_init__(self):
        used = {dim for spec in self.inputs for dim in spec.symbols()}
        missing = sorted(used - set(self.symbols))
        if missing:
            raise ConfigError(f"component {self.name!r} uses symbols without a range: {', '.join(missing)}")

    def point_values(self, point: str | Mapping[str, int]) -> dict[str, int]:
        """Symbol values at a named point ('min', 'opt', 'max') or validated explicit values."""
        if isinstance(point, str):
            if point not in POINTS:
                raise InputError(f"unknown shape point {point!r}", fix=f"use one of {', '.join(POINTS)}")
            return {name: rng.point(point) for name, rng in self.symbols.items()}
        values = {name: rng.opt for name, rng in self.symbols.items()} | dict(point)
        for name, value in values.items():
            rng = self.symbols[name]
            if not rng.min <= value <= rng.max or value % rng.multiple_of:
                raise InputError(
                    f"{self.name}: {name}={value} is outside the exported range",
                    fix=f"use a multiple of {rng.multiple_of} within {rng.min}..{rng.max}",
                )
        return values

    def profile(self) -> dict[str, dict[str, list[int]]]:
        """min/opt/max shape of every input with a symbol (the manifest's ``profile``)."""
        return {
            spec.name: {point: list(spec.concrete(self.point_values(point))) for point in POINTS}
            for spec in self.inputs
            if spec.symbols()
        }

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx ``dynamic_axes``: tensor name -> {axis: symbol}."""
        return {
            spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
            for spec in self.inputs + self.outputs
            if spec.symbols()
        }

    def sample_inputs(self, point: str | Mapping[str, int] = "opt", seed: int = 0) -> dict[str, torch.Tensor]:
        """Fresh random inputs at a shape point, in the dtypes of the specs (float32 for the reference)."""
        values = self.point_values(point)
        generator = torch.Generator().manual_seed(seed)
        tensors = {}
        for spec in self.inputs:
            shape = spec.concrete(values)
            if spec.is_float and spec.uniform:
                tensors[spec.name] = spec.low + (spec.high - spec.low) * torch.rand(shape, generator=generator)
            elif spec.is_float:
                tensors[spec.name] = torch.randn(shape, generator=generator)
            else:
                ints = torch.randint(int(spec.low), int(spec.high), shape, generator=generator)
                tensors[spec.name] = ints.to(DTYPES[spec.dtype])
        return tensors
