"""TensorRT / TensorRT-RTX engine runners that speak device tensors.

Each runner owns one execution context, one CUDA stream and one event; the engines of a pipeline share one
device-memory block for their activations (:class:`TensorRTDevice`). GPU work of the runners of one device
is ordered as their calls are (each call's stream waits for the event of the call before it), so one
runner's output buffer can feed another runner, the shared block is never used by two engines at once,
and nothing synchronises the host until an output is wanted there.

Buffers persist across calls: one per input fed from the host (the copy goes into it; pageable host memory
is staged by CUDA before the call returns), two per output, alternated, so a call's device outputs stay
valid through the runner's next call (a loop feeds ``x_next`` back as ``x``). A zero-byte tensor (the VQGAN prior's
empty cache) is bound to a real allocation, never to address 0. CUDA graphs: a standard TensorRT engine built for
one static shape is captured and replayed by genrt (``cuda_graphs.GraphReplay``); a TensorRT-RTX engine is not
captured by genrt (stream capture needs engines built with REQUIRE_USER_ALLOCATION and is not possible for
every model) but by its own runtime, as the TensorRT-RTX documentation recommends: the context is created from
an ``IRuntimeConfig`` with ``cuda_graph_strategy = WHOLE_GRAPH_CAPTURE`` (one graph per shape, dynamic shapes
included) and user-managed memory. ``cuda_graphs=False`` turns both off; ``runner.cuda_graphs`` says which
applies. Every entry point calls ``cudaSetDevice`` on the calling thread. Streams go to TensorRT as int handles
(cuda-bindings 13).

An engine built for another GPU or TensorRT version is refused with a message that says to run ``genrt
build`` again. A graph the runtime builds itself (a loop's step graph, ``model`` bytes) is compiled
in-process with the TensorRT builder, TF32 off.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from genrt.errors import GenrtError, require
from genrt.manifest import ComponentEntry, EngineRecord, verified_file
from genrt.runtime.backends.base import Runner, Tensor, numpy_dtype
from genrt.runtime.backends.cuda_graphs import GraphReplay
from genrt.runtime.backends.device import DeviceTensor
from genrt.runtime.backends.trt_logger import shared_logger
from genrt.runtime.timing import CudaEventTimer

# engine flavour in the manifest -> (Python module, genrt extra that installs it)
FLAVOURS = {"tensorrt": ("tensorrt", "trt"), "tensorrt_rtx": ("tensorrt_rtx", "trt-rtx")}
REBUILD = "run `genrt build DIR` again on this machine"
NOT_AN_RTX_TARGET = ("TensorRT-RTX cannot target this GPU: build with standard TensorRT on it (pip install 'genrt[trt]', "
                     "`genrt build DIR --trt tensorrt`) or use backend='onnxruntime-cuda'")
# Smallest device allocation: a zero-byte tensor still gets a valid address
MIN_ALLOCATION = 256
RTX_NO_CAPTURE = "TensorRT-RTX engines are captured by TensorRT-RTX's runtime (cuda_graph_strategy WHOLE_GRAPH_CAPTURE)"


def cuda_runtime():
    """The ``cuda.bindings.runtime`` module (cuda-python), imported lazily."""
    return require("cuda.bindings.runtime", extra="trt")


def check(result):
    """Unwrap a cuda-python ``(error, *values)`` tuple, raising on any error."""
    cudart = cuda_runtime()
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise GenrtError(f"CUDA error {error.name}: {cudart.cudaGetErrorString(error)[1].decode()}",
                         fix="check the GPU with nvidia-smi and that no other process holds its memory")
    return values[0] if len(values) == 1 else None


def available_flavours() -> list[str]:
    """Engine flavours whose library and cuda-python import, on a machine with a CUDA GPU."""
    try:
        count = check(cuda_runtime().cudaGetDeviceCount())
    except GenrtError:
        return []
    if not count:
        return []
    flavours = []
    for flavour, (module, extra) in FLAVOURS.items():
        try:
            require(module, extra=extra)
            flavours.append(flavour)
        except GenrtError:
            continue
    return flavours


def logger(flavour: str):
    """The process's one logger of ``flavour``'s TensorRT module (``trt_logger``)."""
    return shared_logger(require(*FLAVOURS[flavour]))


class DeviceBuffer:
    """One device allocation that grows (never shrinks) and is never smaller than ``MIN_ALLOCATION``."""

    def __init__(self):
        self.ptr = 0
        self.capacity = 0

    def reserve(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; True when the address changed."""
        if self.ptr and nbytes <= self.capacity:
            return False
        capacity = max(nbytes, MIN_ALLOCATION, 2 * self.capacity)
        self.free()
        self.ptr = check(cuda_runtime().cudaMalloc(capacity))
        self.capacity = capacity
        return True

    def free(self) -> None:
        if self.ptr:
            check(cuda_runtime().cudaFree(self.ptr))
        self.ptr = 0


class TensorRTDevice:
    """What the engines of one pipeline share: the GPU, the activation block and the order of their work."""

    def __init__(self, device_id: int = 0):
        cudart = cuda_runtime()
        self.device_id = device_id
        self.label = f"cuda:{device_id}"
        self.activate()
        properties = check(cudart.cudaGetDeviceProperties(device_id))
        self.compute_capability = f"{properties.major}.{properties.minor}"
        self.memory = DeviceBuffer()  # shared activation block
        self.memory_generation = 0  # bumped whenever the block moves: contexts must be re-pointed
        self.lock = threading.RLock()  # held while a runner enqueues: one engine at a time uses the block
        self._last = None  # event recorded after the latest work of any runner

    def activate(self) -> None:
        """Make this GPU current on the calling thread (cudaSetDevice applies per thread)."""
        check(cuda_runtime().cudaSetDevice(self.device_id))

    def reserve(self, size: int) -> None:
        """Grow the shared block to at least ``size`` bytes."""
        if self.memory.capacity < size and self.memory.reserve(size):
            self.memory_generation += 1

    def follow(self, stream) -> None:
        """Make ``stream`` wait for the latest work of every runner of this device."""
        if self._last is not None:
            check(cuda_runtime().cudaStreamWaitEvent(stream, self._last, 0))

    def mark(self, stream, event) -> None:
        """Record ``event`` after the work enqueued on ``stream``: the next work of any runner follows it."""
        check(cuda_runtime().cudaEventRecord(event, stream))
        self._last = event

    def close(self) -> None:
        self.memory.free()
        self._last = None


class CudaTensor(DeviceTensor):
    """A view of a runner's device buffer: valid through that runner's next call."""

    backend = "tensorrt"

    def __init__(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype: np.dtype, runner: "TensorRTRunner"):
        super().__init__(shape, dtype, runner.device.label)
        self.buffer = buffer
        self.runner = runner

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    def to_host(self) -> np.ndarray:
        host = np.empty(self.shape, dtype=self.dtype)
        self.runner.download(self.buffer.ptr, host)
        return host


def pick_engine(spec: ComponentEntry, flavours: list[str], compute_capability: str) -> EngineRecord:
    """The first engine of ``spec`` that this machine's TensorRT and GPU can run."""
    built = []
    for engine in spec.tensorrt_engines:
        built.append(f"{engine.flavour} {engine.trt_version} for sm {'/'.join(engine.compute_capabilities) or 'any'}")
        if engine.flavour not in flavours:
            continue
        module = require(FLAVOURS[engine.flavour][0], extra=FLAVOURS[engine.flavour][1])
        if engine.trt_version != module.__version__:
            continue
        if engine.compute_capabilities and compute_capability not in engine.compute_capabilities:
            continue
        return engine
    installed = ", ".join(f"{f} {require(FLAVOURS[f][0], FLAVOURS[f][1]).__version__}" for f in flavours) or "none"
    rebuild_cannot_work = flavours == ["tensorrt_rtx"] and rtx_target(compute_capability) is None
    raise GenrtError(
        f"{spec.name}: no engine for this GPU (compute capability {compute_capability}, installed: {installed}); "
        f"the export has: {'; '.join(built) or 'no engines'}",
        fix=NOT_AN_RTX_TARGET if rebuild_cannot_work else REBUILD,
    )


def rtx_target(compute_capability: str):
    """The installed TensorRT-RTX's ComputeCapability member for ``compute_capability`` ("8.6"), or None when it
    cannot target it (Hopper, 9.0, in TensorRT-RTX 1.7)."""
    trt = require(*FLAVOURS["tensorrt_rtx"])
    return getattr(trt.ComputeCapability, "SM" + compute_capability.replace(".", ""), None)


def build_engine(spec: ComponentEntry, model: bytes, flavour: str, compute_capability: str) -> bytes:
    """A serialized engine of the ONNX ``model`` for GPUs of ``compute_capability`` (TensorRT-RTX targets it;
    standard TensorRT builds for the GPU it runs on), strongly typed, TF32 off, one profile from ``spec.profile``."""
    trt = require(*FLAVOURS[flavour])
    builder = trt.Builder(logger(flavour))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger(flavour))
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise GenrtError(f"{spec.name}: {flavour} cannot parse the graph: {errors}", fix="use resident=False")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    if flavour == "tensorrt_rtx":
        target = rtx_target(compute_capability)
        if target is None:
            raise GenrtError(f"{spec.name}: TensorRT-RTX cannot target compute capability {compute_capability}",
                             fix="install standard TensorRT ('genrt[trt]') or use resident=False")
        config.num_compute_capabilities = 1
        config.set_compute_capability(target, 0)
    if spec.profile:
        profile = builder.create_optimization_profile()
        for name, shapes in spec.profile.items():
            profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise GenrtError(f"{spec.name}: {flavour} could not build an engine of the graph", fix="use resident=False")
    return bytes(serialized)


class TensorRTRunner(Runner):
    """Runs one engine (``spec``'s, or one built from ``model`` ONNX bytes) on its own stream."""

    backend_name = "tensorrt"
    tensor_type = CudaTensor

    def __init__(self, spec: ComponentEntry, device: TensorRTDevice, flavours: list[str], model: bytes | None = None,
                 cuda_graphs: bool = True):
        super().__init__(spec)
        self.device = device
        self.flavours = flavours
        self.model = model
        self.use_cuda_graphs = cuda_graphs
        self.flavour: str | None = None  # of the engine opened
        self.tensor_device = device.label
        self._runtime = None
        self._engine = None
        self._context = None
        self._stream = None  # cudaStream_t of this runner
        self._event = None  # cudaEvent_t recorded after each call
        self._inputs: dict[str, DeviceBuffer] = {}  # input name -> buffer for host feeds
        self._outputs: dict[str, tuple[DeviceBuffer, DeviceBuffer]] = {}  # output name -> its two buffers
        self._uploads: list[weakref.finalize] = []  # frees the buffers of uploaded tensors still alive
        self._parity = 0  # which of the two output buffers this call writes
        self._memory_generation = -1  # generation of the shared block the context points at
        self.graphs: GraphReplay | None = None
        self._timer: CudaEventTimer | None = None  # GPU time of each call on this runner's stream

    def _load_impl(self) -> None:
        cudart = cuda_runtime()
        self.device.activate()
        if self.model is None:
            record = pick_engine(self.spec, self.flavours, self.device.compute_capability)
            flavour, static = record.flavour, record.static
            plan = verified_file(record.path, record.sha256, fix=REBUILD).read_bytes()
            self.source = f"{record.path.parent.name}/{record.path.name} ({flavour} {record.trt_version})"
        else:
            flavour = self.flavours[0]
            static = not self.spec.profile
            plan = build_engine(self.spec, self.model, flavour, self.device.compute_capability)
            self.source = f"{self.spec.name} (built by the runtime with {flavour})"
        self.flavour = flavour
        trt = require(*FLAVOURS[flavour])
        self._runtime = trt.Runtime(logger(flavour))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise GenrtError(f"{self.spec.name}: its engine was built for another GPU or TensorRT version", fix=REBUILD)
        self._context = self._create_context(trt)
        self.device.reserve(self._engine.device_memory_size_v2)
        self._stream = check(cudart.cudaStreamCreate())
        self._event = check(cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming))
        self._timer = CudaEventTimer(cudart, check, self._stream)
        if not self.use_cuda_graphs:
            reason = "turned off (cuda_graphs=False)"
        elif flavour == "tensorrt_rtx":
            reason = RTX_NO_CAPTURE
        else:
            reason = None if static else "the engine has dynamic shapes"
        self.graphs = GraphReplay(cudart, check, disabled=reason)

    def _create_context(self, trt):
        """An execution context on the shared activation block (user-managed memory); TensorRT-RTX's captures its
        own CUDA graphs unless they are turned off."""
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if self.flavour != "tensorrt_rtx":
            return self._engine.create_execution_context(strategy)
        config = self._engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(strategy)
        config.cuda_graph_strategy = (trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE if self.use_cuda_graphs
                                      else trt.CudaGraphStrategy.DISABLED)
        return self._engine.create_execution_context(config)

    @property
    def device_seconds(self) -> float:
        """GPU seconds of every call so far: CUDA events around each call's work on this runner's stream (input
        copies, the engine, output copies), read without synchronising the calls themselves."""
        return self._timer.seconds() if self._timer is not None else 0.0

    @property
    def cuda_graphs(self) -> str:
        if self.graphs is None:
            return "off: not loaded"
        if self.graphs.disabled == RTX_NO_CAPTURE:
            return "by TensorRT-RTX's runtime (cuda_graph_strategy WHOLE_GRAPH_CAPTURE, one graph per shape)"
        if self.graphs.disabled is not None:
            return f"off: {self.graphs.disabled}"
        return f"genrt capture of the static engine ({self.graphs.graphs} graphs so far)"

    @property
    def stream_handle(self) -> int:
        """This runner's stream as the int handle TensorRT takes."""
        return int(self._stream)

    def _infer_impl(self, feeds: dict[str, Tensor], host: frozenset[str]) -> dict[str, Tensor]:
        cudart = cuda_runtime()
        outputs: dict[str, Tensor] = {}
        with self.device.lock:
            self.device.activate()
            self.device.follow(self._stream)
            self._timer.start()
            if self._memory_generation != self.device.memory_generation:
                self._context.set_device_memory(self.device.memory.ptr, self.device.memory.capacity)
                self._memory_generation = self.device.memory_generation
                self.graphs.clear()
            # 1. shapes and addresses of the inputs; host feeds are copied into this runner's buffers
            addresses = []
            for name, value in feeds.items():
                self._context.set_input_shape(name, value.shape)
                if isinstance(value, CudaTensor):
                    ptr = value.ptr
                else:
                    buffer = self._inputs.setdefault(name, DeviceBuffer())
                    buffer.reserve(value.nbytes)
                    ptr = buffer.ptr
                    if value.nbytes:
                        check(cudart.cudaMemcpyAsync(ptr, value.ctypes.data, value.nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
                self._context.set_tensor_address(name, ptr)
                addresses.append(ptr)
            # 2. outputs into this call's buffer of each pair, sized by TensorRT's shape inference
            for spec in self.spec.outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                dtype = numpy_dtype(spec.dtype)
                pair = self._outputs.setdefault(spec.name, (DeviceBuffer(), DeviceBuffer()))
                buffer = pair[self._parity]
                buffer.reserve(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
                self._context.set_tensor_address(spec.name, buffer.ptr)
                addresses.append(buffer.ptr)
                outputs[spec.name] = CudaTensor(buffer, shape, dtype, self)
            self._parity ^= 1
            # 3. run: eagerly, or captured / replayed as a CUDA graph for a static engine
            if not self.graphs.run(tuple(addresses), lambda: self._context.execute_async_v3(self.stream_handle),
                                   self._stream):
                raise GenrtError(f"{self.spec.name}: TensorRT execution failed", fix=REBUILD)
            # 4. device -> host copies of the outputs asked for, on this stream
            for name in host:
                array = np.empty(outputs[name].shape, dtype=outputs[name].dtype)
                if array.nbytes:
                    check(cudart.cudaMemcpyAsync(array.ctypes.data, outputs[name].ptr, array.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
                outputs[name] = array
            self._timer.stop()
            self.device.mark(self._stream, self._event)
        if host:
            check(cudart.cudaStreamSynchronize(self._stream))
        return outputs

    def _upload_impl(self, array: np.ndarray) -> CudaTensor:
        cudart = cuda_runtime()
        buffer = DeviceBuffer()
        with self.device.lock:
            self.device.activate()
            buffer.reserve(array.nbytes)
            self.device.follow(self._stream)
            if array.nbytes:
                check(cudart.cudaMemcpyAsync(buffer.ptr, array.ctypes.data, array.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
            self.device.mark(self._stream, self._event)
        tensor = CudaTensor(buffer, array.shape, array.dtype, self)
        # freed with the tensor, or when the runner closes, whichever comes first
        self._uploads = [free for free in self._uploads if free.alive]
        self._uploads.append(weakref.finalize(tensor, self._free_upload, buffer))
        return tensor

    def _free_upload(self, buffer: DeviceBuffer) -> None:
        self.device.activate()
        buffer.free()

    def download(self, ptr: int, host: np.ndarray) -> None:
        """Copy ``host.nbytes`` from ``ptr`` into ``host`` after every runner's work so far."""
        cudart = cuda_runtime()
        with self.device.lock:
            self.device.activate()
            self.device.follow(self._stream)
            if host.nbytes:
                check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
            self.device.mark(self._stream, self._event)
        check(cudart.cudaStreamSynchronize(self._stream))

    def _close_impl(self) -> None:
        cudart = cuda_runtime()
        self.device.activate()
        if self._stream is not None:
            check(cudart.cudaStreamSynchronize(self._stream))
        self.graphs.clear()
        self._timer.close()
        for free in self._uploads:
            free()
        for buffer in [*self._inputs.values(), *(b for pair in self._outputs.values() for b in pair)]:
            buffer.free()
        self._inputs.clear()
        self._outputs.clear()
        self._uploads.clear()
        if self._event is not None:
            check(cudart.cudaEventDestroy(self._event))
        if self._stream is not None:
            check(cudart.cudaStreamDestroy(self._stream))
        self._stream = self._event = None
        self._context = None
        self._engine = None
        self._runtime = None
        self._memory_generation = -1
