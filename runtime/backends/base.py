"""The runner template every backend follows (after Polygraphy's ``backend/base/runner.py``).

``runner.load()`` opens the graph or engine, ``runner.infer(feeds)`` checks the feeds against the
component's manifest entry (names, dtypes, ranks, fixed sizes, consistent symbols, the profile's
min..max range) and then calls the subclass's ``_infer_impl``; ``runner.close()`` releases
everything. A runner is a context manager. Feeds and results are host numpy arrays; a backend
that runs on a GPU keeps its intermediate tensors on the device and copies once in each direction.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Mapping

import numpy as np

from genrt.errors import InputError
from genrt.runtime.manifest import ComponentSpec, TensorSpec


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a manifest dtype name."""
    return np.dtype(np.bool_ if name == "bool" else name)


class Runner(abc.ABC):
    """Runs one component. Subclasses implement ``_load_impl``, ``_infer_impl`` and ``_close_impl``.

    ``infer`` holds a per-runner lock, so a runner may be shared between threads. ``calls`` and
    ``engine_seconds`` count the inferences and the wall time spent inside the backend (copies to and
    from the device included): what ``genrt bench`` subtracts from a pipeline's time to get the
    runtime's own overhead.
    """

    backend_name: str = "abstract"

    def __init__(self, spec: ComponentSpec):
        self.spec = spec
        self._loaded = False
        self._lock = threading.Lock()
        self.calls = 0
        self.engine_seconds = 0.0

    # -- life cycle ---------------------------------------------------------------------------------
    def load(self) -> "Runner":
        """Open the graph/engine (idempotent); returns ``self``."""
        with self._lock:
            if not self._loaded:
                self._load_impl()
                self._loaded = True
        return self

    def close(self) -> None:
        """Release sessions, engines and device memory (idempotent)."""
        with self._lock:
            if self._loaded:
                self._close_impl()
                self._loaded = False

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- inference ----------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validated inference: ``{input name: array}`` -> ``{output name: array}`` (host numpy)."""
        if not self._loaded:
            self.load()
        self.check_feeds(feeds)
        contiguous = {name: np.ascontiguousarray(feeds[name]) for name in feeds}
        with self._lock:
            start = time.perf_counter()
            outputs = self._infer_impl(contiguous)
            self.engine_seconds += time.perf_counter() - start
            self.calls += 1
        return {spec.name: outputs[spec.name] for spec in self.spec.outputs}

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise InputError unless ``feeds`` matches the component's inputs and profile."""
        expected = [spec.name for spec in self.spec.inputs]
        missing = [name for name in expected if name not in feeds]
        unknown = [name for name in feeds if name not in expected]
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unknown)}"] if unknown else [])
            raise InputError(f"{self.spec.name}: {'; '.join(problems)}",
                             fix=f"feed exactly these inputs: {', '.join(expected)}")
        symbols: dict[str, tuple[int, str]] = {}
        for spec in self.spec.inputs:
            value = feeds[spec.name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"{self.spec.name}: input '{spec.name}' is a {type(value).__name__}",
                                 fix="pass a numpy array")
            if value.dtype != numpy_dtype(spec.dtype):
                raise InputError(f"{self.spec.name}: input '{spec.name}' has dtype {value.dtype}, expected {spec.dtype}",
                                 fix=f"cast it with .astype(np.{spec.dtype})")
            self._check_shape(spec, value.shape, symbols)

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...], symbols: dict[str, tuple[int, str]]) -> None:
        where = f"{self.spec.name}: input '{spec.name}' | received {tuple(shape)}"
        if len(shape) != len(spec.shape):
            raise InputError(f"{where} | expected rank {len(spec.shape)} {_show(spec.shape)}",
                             fix="reshape the input")
        for axis, (dim, size) in enumerate(zip(spec.shape, shape)):
            if isinstance(dim, int) and dim != size:
                raise InputError(f"{where} | expected {_show(spec.shape)} (axis {axis} must be {dim})",
                                 fix="reshape the input")
            if isinstance(dim, str):
                seen = symbols.setdefault(dim, (size, spec.name))
                if seen[0] != size:
                    raise InputError(f"{where} | '{dim}' is {size} here but {seen[0]} in input '{seen[1]}'",
                                     fix=f"give every input the same '{dim}'")
        allowed = self.spec.profile.get(spec.name)
        if allowed is not None and not all(lo <= s <= hi for lo, s, hi in zip(allowed.min, shape, allowed.max)):
            raise InputError(
                f"{where} | expected a shape within {allowed.min} .. {allowed.max} (the engine profile)",
                fix="choose a batch/size inside the range, or export/build again with a wider profile",
            )

    # -- what a backend implements ------------------------------------------------------------------
    @abc.abstractmethod
    def _load_impl(self) -> None:
        """Open the graph or engine and allocate what ``_infer_impl`` needs."""

    @abc.abstractmethod
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated, C-contiguous host feeds; return every output as a host array."""

    @abc.abstractmethod
    def _close_impl(self) -> None:
        """Release what ``_load_impl`` allocated."""


def _show(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(dim) for dim in shape) + ")"
