"""The runner template every backend follows (after Polygraphy's ``backend/base/runner.py``).

``runner.load()`` opens the graph or engine, ``runner.infer(feeds, to_host=...)`` checks the feeds against
the component's manifest entry (names, dtypes, ranks, fixed sizes, consistent symbols, the profile's
min..max range) and then calls the subclass's ``_infer_impl``; ``runner.close()`` releases everything. A
runner is a context manager.

Feeds are host numpy arrays or :class:`~genrt.runtime.backends.device.DeviceTensor` objects of the runner's
own backend and device (what an earlier call returned, or ``runner.upload(array)``: one copy for a value
fed to many calls). Outputs come back as host arrays where the caller asks (``to_host``) and as device
tensors otherwise. A device output stays valid through the runner's next call and is overwritten by the one
after (a backend that owns its output buffers alternates two per output), so a loop may feed one call's
outputs to the next call of the same runner.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Collection, Mapping, Union

import numpy as np

from genrt.errors import InputError
from genrt.manifest import ComponentEntry, TensorSpec
from genrt.runtime.backends.device import DeviceTensor

# A feed or a result: a host array or a tensor on the runner's device.
Tensor = Union[np.ndarray, DeviceTensor]


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a manifest dtype name."""
    return np.dtype(np.bool_ if name == "bool" else name)


class Runner(abc.ABC):
    """Runs one component. Subclasses implement ``_load_impl``, ``_infer_impl``, ``_upload_impl`` and
    ``_close_impl``, and set ``tensor_type`` / ``tensor_device`` (the device tensors they read and write).

    ``infer`` holds a per-runner lock, so a runner may be shared between threads. ``calls`` and
    ``engine_seconds`` count the inferences and the wall time spent inside the backend (copies to and
    from the host included; work left on the device when no output goes to the host is not waited for):
    what ``genrt bench`` subtracts from a pipeline's time to get the runtime's own overhead. ``source`` (set by
    ``_load_impl``) says which graph or engine the runner opened, and ``cuda_graphs`` whether its calls run as
    CUDA graphs and, if not, why.
    """

    backend_name: str = "abstract"
    tensor_type: type[DeviceTensor] = DeviceTensor

    def __init__(self, spec: ComponentEntry):
        self.spec = spec
        self.tensor_device = "cpu"  # DeviceTensor.device of this runner's tensors; subclasses set it
        self._loaded = False
        self._lock = threading.Lock()
        self.calls = 0
        self.engine_seconds = 0.0
        self.source = ""  # the graph or engine opened, e.g. "unet/model-cuda-<key>.onnx (ONNX Runtime CUDA fusions)"

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

    @property
    def device_seconds(self) -> float | None:
        """GPU seconds of every call so far, timed with CUDA events on the runner's own stream; None where the
        runner has no stream of genrt's (the CPU; ONNX Runtime CUDA without cuda-python): ``engine_seconds``, the
        wall clock, is its clock."""
        return None

    @property
    @abc.abstractmethod
    def cuda_graphs(self) -> str:
        """One line: how this runner's calls use CUDA graphs ("off: <why>" where they do not)."""

    # -- inference ----------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, Tensor], to_host: bool | Collection[str] = True) -> dict[str, Tensor]:
        """Validated inference: ``{input name: array or device tensor}`` -> ``{output name: ...}``.

        ``to_host``: True, every output as a host numpy array; False, every output a device tensor; or the
        names of the outputs wanted on the host (the others stay on the device).
        """
        if not self._loaded:
            self.load()
        self.check_feeds(feeds)
        host = self._host_names(to_host)
        prepared = {name: np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
                    for name, value in feeds.items()}
        with self._lock:
            start = time.perf_counter()
            outputs = self._infer_impl(prepared, host)
            self.engine_seconds += time.perf_counter() - start
            self.calls += 1
        return {spec.name: outputs[spec.name] for spec in self.spec.outputs}

    def upload(self, array: np.ndarray) -> DeviceTensor:
        """One host -> device copy of ``array`` onto this runner's device, for a value many calls read (text
        embeddings, a loop's constants)."""
        if not self._loaded:
            self.load()
        with self._lock:
            return self._upload_impl(np.ascontiguousarray(array))

    def _host_names(self, to_host: bool | Collection[str]) -> frozenset[str]:
        names = [spec.name for spec in self.spec.outputs]
        if isinstance(to_host, bool):
            return frozenset(names if to_host else ())
        unknown = [to_host] if isinstance(to_host, str) else sorted(set(to_host) - set(names))
        if unknown:
            raise InputError(f"{self.spec.name}: to_host names {', '.join(unknown)}, not a list of outputs",
                             fix=f"pass True, False or a list of these outputs: {', '.join(names)}")
        return frozenset(to_host)

    def check_feeds(self, feeds: Mapping[str, Tensor]) -> None:
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
            where = f"{self.spec.name}: input '{spec.name}'"
            if isinstance(value, DeviceTensor):
                if not isinstance(value, self.tensor_type) or value.device != self.tensor_device:
                    raise InputError(f"{where} is a {value.backend} tensor on {value.device}, not a "
                                     f"{self.tensor_type.backend} tensor on {self.tensor_device}",
                                     fix="feed a host array, or a tensor this runner's backend returned or uploaded")
            elif not isinstance(value, np.ndarray):
                raise InputError(f"{where} is a {type(value).__name__}",
                                 fix="pass a numpy array (or a device tensor of this runner)")
            if value.dtype != numpy_dtype(spec.dtype):
                raise InputError(f"{where} has dtype {value.dtype}, expected {spec.dtype}",
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
    def _infer_impl(self, feeds: dict[str, Tensor], host: frozenset[str]) -> dict[str, Tensor]:
        """Run validated feeds (C-contiguous host arrays or this runner's device tensors); return the outputs
        named in ``host`` as host arrays and the others as device tensors."""

    @abc.abstractmethod
    def _upload_impl(self, array: np.ndarray) -> DeviceTensor:
        """Copy a C-contiguous host array to this runner's device."""

    @abc.abstractmethod
    def _close_impl(self) -> None:
        """Release what ``_load_impl`` allocated."""


def _show(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(dim) for dim in shape) + ")"
