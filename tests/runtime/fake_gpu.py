"""Fakes of the GPU libraries at the module boundary, for CPU tests of the TensorRT and ONNX Runtime CUDA runners.

``FakeCudart`` stands for ``cuda.bindings.runtime``: device memory is host bytearrays behind fake addresses,
copies really move bytes, streams run their work at once, and every call is recorded (with the calling
thread) so a test can check what the runner asked for. ``FakeTensorRT`` stands for ``tensorrt``: its engine
computes ``y = 2 x`` and ``present = concat(past, x)`` on the bound addresses, refuses address 0 and an
int-less stream, and can be told to fail during capture; a TensorRT-RTX context records its runtime config
(allocation, CUDA-graph strategy). ``OnnxPlanTensorRT`` is the same library whose plans are ONNX graphs, run
by ONNX Runtime CPU over the fake device memory (whole pipelines on the TensorRT runner). ``FakeOrt`` stands for
``onnxruntime``: sessions, OrtValues, I/O binding and CUDA-graph capture by graph id, with the rules ONNX Runtime
documents. Tests install them with
``monkeypatch.setattr`` on attributes of the backend modules, never process-wide.
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
        self.gpu_ms = 0.0  # the fake GPU's clock: every engine run advances it by FakeEngine.kernel_ms
        self.event_ms: dict[int, float] = {}  # event -> the GPU clock when it was recorded
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

    def cudaEventCreate(self):
        return SUCCESS, self._handle("timing event")

    def cudaEventRecord(self, event, stream):
        self._log("cudaEventRecord", int(event), int(stream))
        self.event_ms[int(event)] = self.gpu_ms
        return (SUCCESS,)

    def cudaEventSynchronize(self, event):
        self._log("cudaEventSynchronize", int(event))
        return (SUCCESS,)

    def cudaEventElapsedTime(self, start, end):
        return SUCCESS, self.event_ms[int(end)] - self.event_ms[int(start)]

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
            self.cudart.gpu_ms += self.engine.kernel_ms

        self.cudart.enqueue(stream_handle, run)
        return True


class FakeEngine:
    device_memory_size_v2 = 4096
    kernel_ms = 1.5  # GPU time of one run on the fake GPU's clock

    def __init__(self, cudart):
        self.cudart = cudart
        self.runs = 0
        self.fail_in_capture = False
        self.runtime_config = None  # the TensorRT-RTX IRuntimeConfig its context was created with

    def create_runtime_config(self):
        return FakeRuntimeConfig()

    def create_execution_context(self, strategy_or_config):
        """TensorRT: an allocation strategy; TensorRT-RTX: an IRuntimeConfig (both must be user-managed)."""
        config = strategy_or_config if isinstance(strategy_or_config, FakeRuntimeConfig) else None
        assert (config.allocation if config else strategy_or_config) == "user-managed"
        self.runtime_config = config
        return FakeContext(self.cudart, self)


class FakeRuntimeConfig:
    """TensorRT-RTX's IRuntimeConfig: an allocation strategy and a CUDA-graph strategy."""

    def __init__(self):
        self.allocation = "static"
        self.cuda_graph_strategy = "disabled"

    def set_execution_context_allocation_strategy(self, strategy):
        self.allocation = strategy


class FakeTensorRT:
    """The parts of the ``tensorrt`` module the runner uses."""

    __version__ = "10.99.0"
    class ILogger:
        Severity = SimpleNamespace(INTERNAL_ERROR=SimpleNamespace(name="INTERNAL_ERROR"),
                                   ERROR=SimpleNamespace(name="ERROR"), INFO=SimpleNamespace(name="INFO"))

        def __init__(self):
            pass
    ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="user-managed")
    CudaGraphStrategy = SimpleNamespace(DISABLED="disabled", WHOLE_GRAPH_CAPTURE="whole-graph-capture")
    ComputeCapability = SimpleNamespace(SM75=75, SM80=80, SM86=86, SM89=89, SM120=120, SM121=121)  # TensorRT-RTX's

    def __init__(self, cudart: FakeCudart):
        self.__name__ = "fake_tensorrt"  # the module name the shared logger is kept under
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



class OnnxPlanEngine:
    """An engine whose plan is an ONNX graph, run by ONNX Runtime on the CPU over the fake device memory: a whole
    pipeline's runners go through the TensorRT runner (shapes, bound addresses, copies, device tensors from one
    runner into the next) and compute real numbers, equal to ONNX Runtime CPU's."""

    device_memory_size_v2 = 4096

    def __init__(self, cudart: FakeCudart, plan: bytes):
        import onnxruntime

        self.cudart = cudart
        self.session = onnxruntime.InferenceSession(plan, providers=["CPUExecutionProvider"])
        types = {ort_type: dtype for dtype, ort_type in ORT_TYPE_NAMES.items()}
        self.input_types = {item.name: types[item.type] for item in self.session.get_inputs()}
        self.output_names = [item.name for item in self.session.get_outputs()]
        self.runs = 0

    def create_execution_context(self, strategy):
        assert strategy == "user-managed"
        return OnnxPlanContext(self)


class OnnxPlanContext(FakeContext):
    """Computes the outputs when TensorRT would infer their shapes (the inputs are in device memory by then: the
    fake streams run at once) and writes them to the bound addresses in ``execute_async_v3``."""

    def __init__(self, engine: OnnxPlanEngine):
        super().__init__(engine.cudart, engine)
        self.results: dict[str, np.ndarray] | None = None

    def set_input_shape(self, name, shape):
        self.results = None
        return super().set_input_shape(name, shape)

    def _read(self, name: str) -> np.ndarray:
        dtype, shape = self.engine.input_types[name], self.shapes[name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return np.frombuffer(bytes(self.cudart.view(self.addresses[name], nbytes)), dtype).reshape(shape)

    def get_tensor_shape(self, name):
        if self.results is None:
            feeds = {input_name: self._read(input_name) for input_name in self.engine.input_types}
            self.results = dict(zip(self.engine.output_names, self.engine.session.run(self.engine.output_names, feeds)))
        return self.results[name].shape

    def execute_async_v3(self, stream_handle):
        assert type(stream_handle) is int, f"the stream went to TensorRT as a {type(stream_handle).__name__}"
        if 0 in self.addresses.values() or self.memory is None:
            return False  # TensorRT refuses a null address
        results, addresses = self.results, dict(self.addresses)
        self.results = None

        def run():
            for name, value in results.items():
                if value.nbytes:
                    self.cudart.view(addresses[name], value.nbytes)[:] = np.ascontiguousarray(value).tobytes()
            self.engine.runs += 1

        self.cudart.enqueue(stream_handle, run)
        return True


class OnnxPlanTensorRT(FakeTensorRT):
    """A ``tensorrt`` whose plans are ONNX graphs (:class:`OnnxPlanEngine`)."""

    def __init__(self, cudart: FakeCudart):
        super().__init__(cudart)
        fake = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                fake.engines.append(OnnxPlanEngine(cudart, bytes(plan)))
                return fake.engines[-1]

        self.Runtime = Runtime

# -- onnxruntime -------------------------------------------------------------------------------------------
ORT_TYPE_NAMES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)",
                  np.dtype(np.int32): "tensor(int32)", np.dtype(np.int64): "tensor(int64)"}


class FakeOrtValue:
    """An ``OrtValue``: a numpy array on a named device; its identity stands for its device address."""

    def __init__(self, array: np.ndarray, device: str = "cuda"):
        self.array, self.device = array, device

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device="cpu", device_id=0):
        return cls(np.zeros(shape, dtype), device)

    @classmethod
    def ortvalue_from_numpy(cls, array, device="cpu", device_id=0):
        return cls(np.array(array), device)

    def shape(self):
        return list(self.array.shape)

    def data_type(self):
        return ORT_TYPE_NAMES[self.array.dtype]

    def numpy(self):
        return self.array.copy()

    def update_inplace(self, array):
        assert array.shape == self.array.shape and array.dtype == self.array.dtype, "update_inplace of another shape"
        self.array[...] = array


class FakeRunOptions:
    def __init__(self):
        self.entries = {}

    def add_run_config_entry(self, key, value):
        self.entries[key] = value


class FakeBinding:
    def __init__(self):
        self.inputs: dict[str, FakeOrtValue] = {}
        self.outputs: dict[str, FakeOrtValue | tuple] = {}  # bound value, or ("allocate", device)
        self.results: list[FakeOrtValue] = []

    def bind_cpu_input(self, name, array):
        self.inputs[name] = FakeOrtValue(np.array(array), "cpu")

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value

    def bind_output(self, name, device="cpu", device_id=0):
        self.outputs[name] = ("allocate", device)

    def bind_ortvalue_output(self, name, value):
        self.outputs[name] = value

    def get_outputs(self):
        return self.results


class FakeOrt:
    """The parts of ``onnxruntime`` the ONNX Runtime runner touches. Sessions land on ``lands_on``; a session of
    any graph computes ``y = 2 x``, one of a device-copy graph (``ort_cuda_graphs.identity_graph``) ``y = x``.

    A session opened with ``enable_cuda_graph`` follows ONNX Runtime's documented rules: the first run of a graph
    id (``gpu_graph_id`` run option, default 0; -1: not captured) captures it, recording which values are bound;
    a replay asserts that the very same values are bound (fixed addresses) and reads their current contents.
    With ``cudart`` set, each run advances that fake GPU clock by ``run_ms``. ``refuse_cuda_graphs``: such
    sessions fail to open (a node outside the CUDA provider); ``fail_capture``: a
    capture raises. Counters: ``preloads``, ``capture_attempts``, ``captures``, ``replays``, ``copies``;
    ``sessions`` records each session's ``model`` and ``asked`` providers.
    """

    GraphOptimizationLevel = SimpleNamespace(ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1, ORT_ENABLE_EXTENDED=2,
                                             ORT_ENABLE_ALL=99)
    OrtValue = FakeOrtValue
    RunOptions = FakeRunOptions
    CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"

    def __init__(self, providers=(CUDA, CPU), lands_on=(CUDA, CPU), version="1.99.0"):
        self.providers, self.lands_on = list(providers), list(lands_on)
        self.__version__ = version
        self.preloads = self.capture_attempts = self.captures = self.replays = self.copies = 0
        self.refuse_cuda_graphs = self.fail_capture = False
        self.cudart: FakeCudart | None = None  # when set, every run advances its GPU clock by run_ms
        self.run_ms = 2.0
        self.sessions = []
        fake = self

        class InferenceSession:
            def __init__(self, model, sess_options, providers):
                self.model, self.asked, self.options = model, providers, sess_options
                first = providers[0]
                self.provider_options = first[1] if isinstance(first, tuple) else {}
                self.graphs = self.provider_options.get("enable_cuda_graph") == "1"
                if self.graphs and fake.refuse_cuda_graphs:
                    raise RuntimeError("This session cannot use the graph capture feature as requested by the user "
                                       "as all compute graph nodes have not been partitioned to the CUDA EP.")
                self.copy = isinstance(model, bytes) and b"device_copy" in model
                self.captured: dict[int, tuple] = {}  # graph id -> ids of the bound values
                fake.sessions.append(self)

            def get_providers(self):
                return fake.lands_on if self.asked[0] != fake.CPU else [fake.CPU]

            def get_inputs(self):
                return [SimpleNamespace(name="x")]

            def get_outputs(self):
                return [SimpleNamespace(name="y")]

            def io_binding(self):
                return FakeBinding()

            def run_with_iobinding(self, binding, run_options=None):
                graph_id = int((run_options.entries if run_options else {}).get("gpu_graph_id", 0))
                if self.graphs and graph_id != -1:
                    bound = tuple(id(binding.inputs[n]) for n in sorted(binding.inputs)) + tuple(
                        id(v) for _, v in sorted(binding.outputs.items()))
                    assert not any(isinstance(v, tuple) for v in binding.outputs.values()), "capture binds outputs"
                    if graph_id not in self.captured:
                        fake.capture_attempts += 1
                        if fake.fail_capture:
                            raise RuntimeError("CUDA failure 901: operation not permitted when stream is capturing")
                        self.captured[graph_id] = bound
                        fake.captures += 1
                    else:
                        assert self.captured[graph_id] == bound, "replay with other addresses than the capture"
                        fake.replays += 1
                x = binding.inputs["x"].array
                y = x.copy() if self.copy else 2 * x
                fake.copies += self.copy
                if fake.cudart is not None:
                    fake.cudart.gpu_ms += fake.run_ms
                target = binding.outputs["y"]
                if isinstance(target, tuple):
                    target = FakeOrtValue(y, target[1])
                else:
                    target.array[...] = y
                binding.results = [target]

        class SessionOptions:
            def add_session_config_entry(self, key, value):
                setattr(self, key, value)

        self.InferenceSession = InferenceSession
        self.SessionOptions = SessionOptions

    def get_available_providers(self):
        return self.providers

    def preload_dlls(self):
        self.preloads += 1
