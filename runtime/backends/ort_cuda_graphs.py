"""CUDA graphs of one ONNX Runtime CUDA session: I/O bound to fixed device buffers, captured per shape, replayed.

ONNX Runtime captures a session's work as a CUDA graph when its CUDA provider runs with ``enable_cuda_graph``
(its documentation: CUDA execution provider, "Using CUDA Graphs"). Its constraints, and how each is kept:

- A graph reads and writes the addresses it was captured with, so I/O binding is required: every input and
  output of a captured run is bound (``bind_ortvalue_input`` / ``bind_ortvalue_output``) to a device ``OrtValue``
  owned here, and each call copies its feeds into those buffers: host arrays with ``OrtValue.update_inplace``,
  device tensors with a device-to-device copy (:class:`DeviceCopy`).
- Shapes cannot change under one graph id (``gpu_graph_id`` run option): each set of input shapes gets ids of
  its own, at most ``MAX_GRAPHS`` per session (ONNX Runtime keeps a captured graph for the session's life).
  Other shapes run uncaptured (``gpu_graph_id`` -1), which is how dynamic shapes (the VQGAN prior's growing
  cache) run.
- The first run of a graph id captures it; later runs replay it. Runs of one session never overlap (the
  runner's lock): ONNX Runtime does not support concurrent runs with CUDA graphs.

The first call with a new set of input shapes runs uncaptured, ONNX Runtime allocating the outputs: that gives
the output shapes, so the next calls of those shapes are captured with outputs bound to buffers of that size.
Two buffer sets (two graph ids) alternate per shape, so a call's device outputs stay valid through the runner's
next call, as the runner contract says (``base.py``). A capture that fails turns capture off for the session,
with the reason (``disabled``), and the call runs again uncaptured: it is never retried.

Without a GPU the same class runs on an ONNX Runtime CPU session (the run option is ignored there), which is
how the tests check the data movement with real ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from genrt.errors import GenrtError
from genrt.manifest import ComponentEntry

# Captured graphs per session: two per input shape (the alternating output buffers)
MAX_GRAPHS = 8
# gpu_graph_id of a run that is neither captured nor replayed
UNCAPTURED = -1
GRAPH_ID = "gpu_graph_id"


@dataclasses.dataclass
class GraphSlot:
    """One graph id: its bound buffers and the run options that name it."""

    graph_id: int
    inputs: dict  # input name -> OrtValue the graph reads
    outputs: dict  # output name -> OrtValue the graph writes
    binding: object  # IOBinding with exactly these values bound
    run_options: object  # RunOptions with gpu_graph_id = graph_id
    captured: bool = False  # its first run (the capture) succeeded


class DeviceCopy:
    """Device-to-device copies between ``OrtValue`` objects of one device, run by ONNX Runtime itself: one
    Identity graph per dtype (no graph optimisation), its input bound to the source and its output to the
    target, which the Identity kernel copies into. ``open_session(model_bytes)`` opens a session on the device."""

    def __init__(self, open_session: Callable[[bytes], object]):
        self._open_session = open_session
        self._sessions: dict[str, object] = {}  # ORT type ("tensor(float)") -> Identity session

    def __call__(self, source, target) -> None:
        """Copy ``source`` into ``target`` (same shape and dtype, same device)."""
        session = self._sessions.get(source.data_type())
        if session is None:
            session = self._sessions[source.data_type()] = self._open_session(identity_graph(source.data_type()))
        binding = session.io_binding()
        binding.bind_ortvalue_input("x", source)
        binding.bind_ortvalue_output("y", target)
        session.run_with_iobinding(binding)


def identity_graph(ort_type: str) -> bytes:
    """A serialized ONNX graph ``y = Identity(x)`` of any shape, for tensors of ``ort_type`` ("tensor(float)")."""
    from onnx import TensorProto, helper

    elem = {"tensor(float)": TensorProto.FLOAT, "tensor(float16)": TensorProto.FLOAT16,
            "tensor(double)": TensorProto.DOUBLE, "tensor(int32)": TensorProto.INT32,
            "tensor(int64)": TensorProto.INT64, "tensor(bool)": TensorProto.BOOL}[ort_type]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "device_copy",
                              [helper.make_tensor_value_info("x", elem, None)],
                              [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


class CudaGraphRuns:
    """Runs of one session with CUDA graphs (see the module doc); ``run`` replaces a plain bound run.

    ``ort``: the onnxruntime module; ``device``/``device_id``: where the bound buffers live ("cuda" or, in tests,
    "cpu"); ``copy``: the device-to-device copy for device feeds.
    """

    def __init__(self, ort, session, spec: ComponentEntry, device: str, device_id: int, copy: DeviceCopy):
        self._ort, self._session, self._spec = ort, session, spec
        self._device, self._device_id, self._copy = device, device_id, copy
        self.disabled: str | None = None  # why nothing is captured (None: capture is on)
        self._output_shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}  # input shapes -> output shapes
        self._slots: dict[tuple, list[GraphSlot]] = {}  # input shapes -> its two slots
        self._parity: dict[tuple, int] = {}  # input shapes -> which slot the next call uses
        self.uncaptured_runs = 0  # runs with gpu_graph_id -1 (a new shape, the budget spent, or capture off)

    @property
    def graphs(self) -> int:
        """Graphs captured so far."""
        return sum(slot.captured for slots in self._slots.values() for slot in slots)

    def describe(self) -> str:
        if self.disabled is not None:
            return f"off: {self.disabled}"
        return f"ONNX Runtime enable_cuda_graph, captured per input shape ({self.graphs} so far, at most {MAX_GRAPHS})"

    def run(self, feeds: dict, host: frozenset[str]) -> dict:
        """Run validated ``feeds`` (host arrays or ``OrtTensor`` objects of this device); returns OrtValues by
        output name, host arrays for the names in ``host``."""
        key = tuple(sorted((name, tuple(value.shape)) for name, value in feeds.items()))
        slot = self._slot(key) if self.disabled is None and key in self._output_shapes else None
        if slot is not None:
            outputs = self._replay(slot, feeds)
            if outputs is not None:
                return {name: value.numpy() if name in host else value for name, value in outputs.items()}
        return self._uncaptured(key, feeds, host)

    def _slot(self, key: tuple) -> GraphSlot | None:
        """The slot this call of input shapes ``key`` uses (alternating), made on first use; None when the
        session's graph budget is spent on other shapes."""
        slots = self._slots.get(key)
        if slots is None:
            used = sum(len(s) for s in self._slots.values())
            if used + 2 > MAX_GRAPHS:
                return None
            slots = self._slots[key] = [self._make_slot(key, used + 1), self._make_slot(key, used + 2)]
        parity = self._parity.get(key, 0)
        self._parity[key] = parity ^ 1
        return slots[parity]

    def _make_slot(self, key: tuple, graph_id: int) -> GraphSlot:
        from genrt.runtime.backends.base import numpy_dtype

        def buffer(shape, dtype):
            return self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self._device, self._device_id)

        dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in (*self._spec.inputs, *self._spec.outputs)}
        inputs = {name: buffer(shape, dtypes[name]) for name, shape in key}
        outputs = {name: buffer(shape, dtypes[name]) for name, shape in self._output_shapes[key].items()}
        binding = self._session.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in outputs.items():
            binding.bind_ortvalue_output(name, value)
        run_options = self._ort.RunOptions()
        run_options.add_run_config_entry(GRAPH_ID, str(graph_id))
        return GraphSlot(graph_id, inputs, outputs, binding, run_options)

    def _replay(self, slot: GraphSlot, feeds: dict) -> dict | None:
        """Copy ``feeds`` into the slot's buffers and run its graph (capturing it the first time); None when that
        capture failed (capture is then off)."""
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                slot.inputs[name].update_inplace(value)
            else:
                self._copy(value.value, slot.inputs[name])
        try:
            self._session.run_with_iobinding(slot.binding, slot.run_options)
        except Exception as exc:  # ONNX Runtime's own exception types; the message is the reason
            if slot.captured:
                raise GenrtError(f"{self._spec.name}: ONNX Runtime failed replaying its CUDA graph: {exc}",
                                 fix="open the pipeline again; report the graph if it persists") from None
            self.disabled = f"capture failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            return None
        slot.captured = True
        return dict(slot.outputs)

    def _uncaptured(self, key: tuple, feeds: dict, host: frozenset[str]) -> dict:
        """A bound run without capture (ONNX Runtime allocates the device outputs); records the output shapes."""
        binding = self._session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value.value)
        names = [spec.name for spec in self._spec.outputs]
        for name in names:
            binding.bind_output(name, "cpu" if name in host else self._device, self._device_id)
        run_options = self._ort.RunOptions()
        run_options.add_run_config_entry(GRAPH_ID, str(UNCAPTURED))
        self._session.run_with_iobinding(binding, run_options)
        self.uncaptured_runs += 1
        values = binding.get_outputs()
        self._output_shapes.setdefault(key, {name: tuple(value.shape()) for name, value in zip(names, values)})
        return {name: value.numpy() if name in host else value for name, value in zip(names, values)}
