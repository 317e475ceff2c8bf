"""Fakes of the GPU libraries at the module boundary, for CPU tests of the TensorRT runner.

``FakeCudart`` stands for ``cuda.bindings.runtime``: device memory is host bytearrays behind fake addresses,
copies really move bytes, streams run their work at once, and every call is recorded (with the calling
thread) so a test can check what the runner asked for. ``FakeTensorRT`` stands for ``tensorrt``: its engine
computes ``y = 2 x`` and ``present = concat(past, x)`` on the bound addresses, refuses address 0 and an
int-less stream, and can be told to fail during capture. Tests install both with ``monkeypatch.setattr`` on
attributes of ``genrt.runtime.backends.tensorrt``, never process-wide.
"""

from __future__ import annotations

import ctypes
import threading
from types import SimpleNamespace

import numpy as np


class _Error:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


SUCCESS = _Error("cudaSuccess")
CAPTURE_INVALIDATED = _Error("cudaErrorStreamCaptureInvalidated")


class _Handle:
    """A cudaStream_t / cudaEvent_t / graph: int() gives its handle, as cuda-bindings objects do."""

    def __init__(self, kind: str, number: int):
        self.kind, self.number = kind, number

    def __int__(self) -> int:
        return self.number


class FakeCudart:
    cudaError_t = SimpleNamespace(cudaSuccess=SUCCESS)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")
    cudaEventDisableTiming = 2

    def __init__(self, devices: int = 1, capability: tuple[int, int] = (8, 9)):
        self.devices, self.capability = devices, capability
        self.memory: dict[int, bytearray] = {}  # address -> allocation
        self.calls: list[tuple] = []  # (function name, thread id, *arguments)
        self.capturing: dict[int, list] = {}  # stream number -> work recorded during capture
        self.end_capture_error = SUCCESS
        self._next = 0x1000
        self._handles = 0

    def _log(self, name, *args):
        self.calls.append((name, threading.get_ident(), *args))

    def _handle(self, kind):
        self._handles += 1
        return _Handle(kind, 0x7F00 + self._handles)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    # -- device and memory ----------------------------------------------------------------------------
    def cudaGetDeviceCount(self):
        return SUCCESS, self.devices

    def cudaSetDevice(self, device):
        self._log("cudaSetDevice", device)
        return (SUCCESS,)

    def cudaGetDeviceProperties(self, device):
        return SUCCESS, SimpleNamespace(major=self.capability[0], minor=self.capability[1])

    def cudaGetErrorString(self, error):
        return SUCCESS, error.name.encode()

    def cudaMalloc(self, size):
        address = self._next
        self._next += size + 0x100
        self.memory[address] = bytearray(size)
        self._log("cudaMalloc", size, address)
        return SUCCESS, address

    def cudaFree(self, address):
        self._log("cudaFree", address)
        del self.memory[address]
        return (SUCCESS,)

    def view(self, address: int, nbytes: int) -> memoryview:
        """The fake device bytes at ``address`` (inside one allocation)."""
        for start, block in self.memory.items():
            if start <= address and address + nbytes <= start + len(block):
                return memoryview(block)[address - start:address - start + nbytes]
        raise AssertionError(f"address {address:#x} (+{nbytes}) is not allocated")

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self._log("cudaMemcpyAsync", kind, nbytes, int(stream))
        if kind == "H2D":
            self.view(dst, nbytes)[:] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.view(src, nbytes)), nbytes)
        return (SUCCESS,)

    # -- streams, events, graphs ----------------------------------------------------------------------
    def cudaStreamCreate(self):
        return SUCCESS, self._handle("stream")

    def cudaStreamDestroy(self, stream):
        self._log("cudaStreamDestroy", int(stream))
        return (SUCCESS,)

    def cudaStreamSynchronize(self, stream):
        self._log("cudaStreamSynchronize", int(stream))
        return (SUCCESS,)

    def cudaEventCreateWithFlags(self, flags):
        return SUCCESS, self._handle("event")

    def cudaEventDestroy(self, event):
        return (SUCCESS,)

    def cudaEventRecord(self, event, stream):
        self._log("cudaEventRecord", int(event), int(stream))
        return (SUCCESS,)

    def cudaStreamWaitEvent(self, stream, event, flags):
        self._log("cudaStreamWaitEvent", int(stream), int(event))
        return (SUCCESS,)

    def cudaStreamBeginCapture(self, stream, mode):
        self._log("cudaStreamBeginCapture", int(stream))
        assert int(stream) not in self.capturing, "capture begun twice on one stream"
        self.capturing[int(stream)] = []
        return (SUCCESS,)

    def cudaStreamEndCapture(self, stream):
        self._log("cudaStreamEndCapture", int(stream))
        work = self.capturing.pop(int(stream))
        if self.end_capture_error is not SUCCESS:
            return self.end_capture_error, None
        graph = self._handle("graph")
        graph.work = work
        return SUCCESS, graph

    def cudaGraphInstantiate(self, graph, flags):
        executable = self._handle("graph_exec")
        executable.work = graph.work
        return SUCCESS, executable

    def cudaGraphLaunch(self, executable, stream):
        self._log("cudaGraphLaunch", int(stream))
        for run in executable.work:
            run()
        return (SUCCESS,)

    def cudaGraphExecDestroy(self, executable):
        self._log("cudaGraphExecDestroy")
        return (SUCCESS,)

    def cudaGraphDestroy(self, graph):
        self._log("cudaGraphDestroy")
        return (SUCCESS,)

    def enqueue(self, stream: int, run) -> None:
        """Run ``run`` now, or record it when ``stream`` is capturing."""
        if stream in self.capturing:
            self.capturing[stream].append(run)
        else:
            run()


class FakeContext:
    """y = 2 x (B, N); present = concat(past, x) along axis 1 (B, P + N); all float32."""

    def __init__(self, cudart: FakeCudart, engine: "FakeEngine"):
        self.cudart, self.engine = cudart, engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.memory = None

    def set_device_memory(self, ptr, size):
        self.memory = (ptr, size)

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def get_tensor_shape(self, name):
        batch, count = self.shapes["x"]
        return (batch, count) if name == "y" else (batch, self.shapes["past"][1] + count)

    def execute_async_v3(self, stream_handle):
        assert type(stream_handle) is int, f"the stream went to TensorRT as a {type(stream_handle).__name__}"
        if self.engine.fail_in_capture and stream_handle in self.cudart.capturing:
            raise RuntimeError("a kernel synchronised during capture")
        if 0 in self.addresses.values() or self.memory is None:
            return False  # TensorRT refuses a null address
        x_shape, past_shape = self.shapes["x"], self.shapes["past"]
        addresses = dict(self.addresses)

        def run():
            read = lambda name, shape: np.frombuffer(  # noqa: E731
                bytes(self.cudart.view(addresses[name], 4 * int(np.prod(shape)))), np.float32).reshape(shape)
            x, past = read("x", x_shape), read("past", past_shape)
            for name, value in (("y", 2 * x), ("present", np.concatenate([past, x], axis=1))):
                self.cudart.view(addresses[name], value.nbytes)[:] = value.astype(np.float32).tobytes()
            self.engine.runs += 1

        self.cudart.enqueue(stream_handle, run)
        return True


class FakeEngine:
    device_memory_size_v2 = 4096

    def __init__(self, cudart):
        self.cudart = cudart
        self.runs = 0
        self.fail_in_capture = False

    def create_execution_context(self, strategy):
        assert strategy == "user-managed"
        return FakeContext(self.cudart, self)


class FakeTensorRT:
    """The parts of the ``tensorrt`` module the runner uses."""

    __version__ = "10.99.0"
    Logger = type("Logger", (), {"ERROR": 1, "__init__": lambda self, level: None})
    ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="user-managed")

    def __init__(self, cudart: FakeCudart):
        self.engines: list[FakeEngine] = []
        fake = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                if plan != b"fake plan":
                    return None
                fake.engines.append(FakeEngine(cudart))
                return fake.engines[-1]

        self.Runtime = Runtime
