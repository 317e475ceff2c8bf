"""TensorRT / TensorRT-RTX engine runners.

One execution context per engine; the engines of a pipeline share one CUDA stream and one
device-memory block (their activations), which is safe because a pipeline runs one engine at a
time on that stream. Inputs/outputs live in device buffers allocated with cuda-python
(``cuda.bindings.runtime``) and bound with ``set_tensor_address``; an engine built for one static
shape is replayed as a captured CUDA graph after its first run. An engine built for another GPU or
TensorRT version is refused with a message that says to run ``genrt build`` again.
"""

from __future__ import annotations

import numpy as np

from genrt.errors import GenrtError, require
from genrt.runtime.backends.base import Runner, numpy_dtype
from genrt.runtime.manifest import ComponentSpec, EngineSpec, verified_file

# engine flavour in the manifest -> (Python module, genrt extra that installs it)
FLAVOURS = {"tensorrt": ("tensorrt", "trt"), "tensorrt_rtx": ("tensorrt_rtx", "trt-rtx")}
REBUILD = "run `genrt build DIR` again on this machine"


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


class TensorRTDevice:
    """What the engines of one pipeline share: the GPU, one stream and one device-memory block."""

    def __init__(self, device_id: int = 0):
        cudart = cuda_runtime()
        self.device_id = device_id
        check(cudart.cudaSetDevice(device_id))
        properties = check(cudart.cudaGetDeviceProperties(device_id))
        self.compute_capability = f"{properties.major}.{properties.minor}"
        self.stream = check(cudart.cudaStreamCreate())
        self.memory_ptr = 0  # shared activation block
        self.memory_size = 0
        self.memory_generation = 0  # bumped whenever the block moves: contexts must be re-pointed

    def reserve(self, size: int) -> None:
        """Grow the shared block to at least ``size`` bytes."""
        if size <= self.memory_size:
            return
        cudart = cuda_runtime()
        if self.memory_ptr:
            check(cudart.cudaFree(self.memory_ptr))
        self.memory_ptr = check(cudart.cudaMalloc(size))
        self.memory_size = size
        self.memory_generation += 1

    def synchronize(self) -> None:
        check(cuda_runtime().cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        cudart = cuda_runtime()
        if self.memory_ptr:
            check(cudart.cudaFree(self.memory_ptr))
            self.memory_ptr, self.memory_size = 0, 0
        if self.stream is not None:
            check(cudart.cudaStreamDestroy(self.stream))
            self.stream = None


def pick_engine(spec: ComponentSpec, flavours: list[str], compute_capability: str) -> EngineSpec:
    """The first engine of ``spec`` that this machine's TensorRT and GPU can run."""
    built = []
    for engine in spec.engines:
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
    raise GenrtError(
        f"{spec.name}: no engine for this GPU (compute capability {compute_capability}, installed: {installed}); "
        f"the export has: {'; '.join(built) or 'no engines'}",
        fix=REBUILD,
    )


class TensorRTRunner(Runner):
    """Runs one engine through one execution context on the shared stream and memory block."""

    backend_name = "tensorrt"

    def __init__(self, spec: ComponentSpec, device: TensorRTDevice, flavours: list[str]):
        super().__init__(spec)
        self.device = device
        self.flavours = flavours
        self._runtime = None
        self._engine = None
        self._context = None
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._memory_generation = -1  # generation of the shared block the context points at
        self._static = False
        self._graph = None  # (cudaGraph_t, cudaGraphExec_t) once captured

    def _load_impl(self) -> None:
        engine_spec = pick_engine(self.spec, self.flavours, self.device.compute_capability)
        path = verified_file(engine_spec.path, engine_spec.sha256, fix=REBUILD)
        trt = require(*FLAVOURS[engine_spec.flavour])
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise GenrtError(f"{self.spec.name}: engine {path} was built for another GPU or TensorRT version",
                             fix=REBUILD)
        self._context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self.device.reserve(self._engine.device_memory_size_v2)
        self._static = engine_spec.static

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (re-allocated when it grows)."""
        ptr, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            cudart = cuda_runtime()
            if ptr:
                check(cudart.cudaFree(ptr))
            ptr = check(cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (ptr, nbytes)
            self._drop_graph()  # the captured graph points at the old buffer
        return ptr

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = cuda_runtime()
        stream = self.device.stream
        if self._memory_generation != self.device.memory_generation:
            self._context.set_device_memory(self.device.memory_ptr, self.device.memory_size)
            self._memory_generation = self.device.memory_generation
            self._drop_graph()
        # 1. shapes and host -> device copies of the inputs
        for name, array in feeds.items():
            self._context.set_input_shape(name, array.shape)
            ptr = self._buffer(name, array.nbytes)
            self._context.set_tensor_address(name, ptr)
            check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        # 2. output buffers sized by TensorRT's shape inference
        outputs = {}
        for spec in self.spec.outputs:
            host = np.empty(tuple(self._context.get_tensor_shape(spec.name)), dtype=numpy_dtype(spec.dtype))
            self._context.set_tensor_address(spec.name, self._buffer(spec.name, host.nbytes))
            outputs[spec.name] = host
        # 3. run: a static engine is replayed as a CUDA graph after one ordinary run
        if self._graph is not None:
            check(cudart.cudaGraphLaunch(self._graph[1], stream))
        elif not self._context.execute_async_v3(stream):
            raise GenrtError(f"{self.spec.name}: TensorRT execution failed", fix=REBUILD)
        elif self._static:
            self._capture(stream)
        # 4. device -> host copies, then wait for the stream
        for name, host in outputs.items():
            check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        self.device.synchronize()
        return outputs

    def _capture(self, stream) -> None:
        """Record one ``execute_async_v3`` as a CUDA graph (kept only if capture succeeds)."""
        cudart = cuda_runtime()
        check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        captured = self._context.execute_async_v3(stream)
        error, graph = cudart.cudaStreamEndCapture(stream)
        if not captured or error != cudart.cudaError_t.cudaSuccess:
            return  # not capturable (e.g. a plugin that synchronises): stay on execute_async_v3
        self._graph = (graph, check(cudart.cudaGraphInstantiate(graph, 0)))

    def _drop_graph(self) -> None:
        if self._graph is not None:
            cudart = cuda_runtime()
            check(cudart.cudaGraphExecDestroy(self._graph[1]))
            check(cudart.cudaGraphDestroy(self._graph[0]))
            self._graph = None

    def _close_impl(self) -> None:
        self._drop_graph()
        cudart = cuda_runtime()
        for ptr, _ in self._buffers.values():
            check(cudart.cudaFree(ptr))
        self._buffers.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._memory_generation = -1
