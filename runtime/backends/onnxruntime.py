"""ONNX Runtime runners: CPU, and CUDA with I/O binding.

Every call binds its feeds (host arrays copied in by ONNX Runtime, or ``OrtTensor`` values already on the
device) and its outputs: on the host for the names the caller wants there, on the runner's device for the
rest, so a loop can chain the U-Net and a small step graph (``genrt.runtime.loops``) without copying the
latents to the host. On the CPU the "device" is host memory, which is how the device path is tested without
a GPU. A call with host feeds and host outputs on the CPU is a plain ``session.run``.

CUDA needs ``onnxruntime-gpu`` (extra ``gpu``) and a GPU. Before the first CUDA session of a process without
torch, ``onnxruntime.preload_dlls()`` loads the CUDA and cuDNN libraries of the pip wheels (torch loads them
itself when imported first). A CUDA session that ONNX Runtime quietly created on the CPU provider instead
(libraries missing) is refused. TF32 is off (``use_tf32=0``): fp32 graphs keep fp32 matmuls and
convolutions, which the parity bound of 1e-4 needs.

Which graph a CUDA session opens: the component's fused graph (``genrt build DIR --trt onnxruntime-cuda``,
recorded among its engines with flavour ``onnxruntime-cuda``) when one was made by the installed ONNX Runtime,
else the plain ``model.onnx``; the CPU always opens the plain graph (the fused ops have no CPU kernels).
``runner.source`` says which, and why. CUDA sessions run with CUDA graphs (``enable_cuda_graph``, captured
per input shape with every input and output bound to fixed device buffers: ``ort_cuda_graphs``) unless the
runner is opened with ``cuda_graphs=False`` or ONNX Runtime refuses them for the graph (a node outside the CUDA
provider, control flow); ``runner.cuda_graphs`` says which. With cuda-python installed a CUDA session runs on
a stream of the runner's own (``user_compute_stream``, ``cuda_stream.RunnerStream``), whose CUDA events time
each call (``runner.device_seconds``); without it, ONNX Runtime's stream and the wall clock.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import numpy as np

from genrt.errors import GenrtError, require
from genrt.manifest import ComponentEntry, EngineRecord, ManifestError, verified_file
from genrt.runtime.backends import gpu
from genrt.runtime.backends import cuda_stream
from genrt.runtime.backends.base import Runner, Tensor
from genrt.runtime.backends.device import DeviceTensor
from genrt.runtime.backends.ort_cuda_graphs import CudaGraphRuns, DeviceCopy
from genrt.runtime.backends.ort_options import UNOPTIMIZED, OrtOptions

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
OPENVINO_PROVIDER = "OpenVINOExecutionProvider"
# CUDA provider options: no TF32 (fp32 stays fp32)
CUDA_OPTIONS = {"use_tf32": "0"}
# ... and for a session that captures CUDA graphs
CUDA_GRAPH_OPTIONS = {"enable_cuda_graph": "1"}
# OrtValue.data_type() of each manifest dtype name
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
             "int32": "tensor(int32)", "int64": "tensor(int64)", "bool": "tensor(bool)"}
NUMPY_TYPES = {ort_type: np.dtype(np.bool_ if name == "bool" else name) for name, ort_type in ORT_TYPES.items()}
GPU_FIX = "pip install 'genrt[gpu]' (onnxruntime-gpu for this CUDA version) or use backend='onnxruntime-cpu'"


class OrtTensor(DeviceTensor):
    """An ``OrtValue`` on an ONNX Runtime device. A CPU value may share a host array's memory, which it keeps
    alive (``host``)."""

    backend = "onnxruntime"

    def __init__(self, value, device: str, host: np.ndarray | None = None):
        super().__init__(tuple(value.shape()), NUMPY_TYPES[value.data_type()], device)
        self.value = value
        self._host = host

    def to_host(self) -> np.ndarray:
        return self.value.numpy()


def cuda_missing() -> str | None:
    """Why ONNX Runtime cannot run on a CUDA GPU here (None: its CUDA provider is compiled in and the driver sees
    a device)."""
    try:
        ort = require("onnxruntime", extra="gpu")
    except GenrtError:
        return "onnxruntime is not installed"
    if CUDA_PROVIDER not in ort.get_available_providers():
        return "the installed onnxruntime has no CUDA provider (onnxruntime-gpu)"
    if gpu.device_count() == 0:
        return "the NVIDIA driver sees no GPU"
    return None


def cuda_available() -> bool:
    """Whether ONNX Runtime can run on a CUDA GPU here (``cuda_missing`` has nothing to say)."""
    return cuda_missing() is None


def torch_imported() -> bool:
    return "torch" in sys.modules


@functools.lru_cache(maxsize=None)
def preload_cuda_libraries(ort) -> None:
    """Load the CUDA/cuDNN libraries of the pip wheels (once per ``ort`` module), unless torch, which loads its
    own, came first; onnxruntime older than 1.21 has no ``preload_dlls`` and relies on the library path."""
    if not torch_imported() and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def open_session(model, device: str, device_id: int = 0, threads: int = 0, *, options: OrtOptions = OrtOptions(),
                 cuda_graph: bool = False, stream: int | None = None):
    """An ``InferenceSession`` of ``model`` (a path or serialized ONNX bytes) on ``device`` ("cpu" or "cuda")
    with ``threads`` intra-op threads and the session ``options``; ``cuda_graph``: a CUDA session that captures
    CUDA graphs (``enable_cuda_graph``); ``stream``: the address of the CUDA stream it runs on
    (``user_compute_stream``; None: ONNX Runtime's own)."""
    ort = require("onnxruntime", extra="gpu" if device == "cuda" else "cpu")
    session_options = options.session_options(ort, threads)
    if device != "cuda" and options.cpu_provider == "openvino":
        return _openvino_session(ort, model, session_options, options, threads)
    if device != "cuda":
        return ort.InferenceSession(model, sess_options=session_options, providers=[CPU_PROVIDER])
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise GenrtError("the installed onnxruntime has no CUDA execution provider",
                         fix="pip install 'genrt[gpu]' (onnxruntime-gpu) in place of onnxruntime")
    preload_cuda_libraries(ort)
    provider = {"device_id": device_id, **CUDA_OPTIONS, **(CUDA_GRAPH_OPTIONS if cuda_graph else {}),
                **({} if stream is None else {"user_compute_stream": str(stream)})}
    session = ort.InferenceSession(model, sess_options=session_options,
                                   providers=[(CUDA_PROVIDER, provider), CPU_PROVIDER])
    if session.get_providers()[0] != CUDA_PROVIDER:
        raise GenrtError(f"ONNX Runtime fell back to {', '.join(session.get_providers())}: its CUDA provider did "
                         "not load (CUDA/cuDNN libraries missing or of another version, or no GPU)", fix=GPU_FIX)
    return session


def _openvino_session(ort, model, session_options, options: OrtOptions, threads: int):
    """A CPU session on OpenVINO's execution provider (ONNX Runtime's kernels take the nodes it leaves)."""
    if OPENVINO_PROVIDER not in ort.get_available_providers():
        raise GenrtError("the installed onnxruntime has no OpenVINO execution provider",
                         fix="pip install 'genrt[openvino]' (onnxruntime-openvino) in place of onnxruntime")
    session = ort.InferenceSession(model, sess_options=session_options, providers=[
        (OPENVINO_PROVIDER, options.openvino_provider_options(threads)), CPU_PROVIDER])
    if session.get_providers()[0] != OPENVINO_PROVIDER:
        raise GenrtError(f"ONNX Runtime fell back to {', '.join(session.get_providers())}: its OpenVINO provider did "
                         "not load", fix="reinstall onnxruntime-openvino, or use OrtOptions(cpu_provider='onnxruntime')")
    return session


def pick_graph(spec: ComponentEntry, device: str, version: str) -> tuple[Path, str | None, str]:
    """The graph a ``device`` session of ``spec`` opens with ONNX Runtime ``version``: (path, sha256, what it is
    and why; a path relative to the export folder)."""
    plain = (spec.onnx, spec.sha256)
    if device != "cuda":
        return (*plain, f"{_relative(spec, spec.onnx)} (plain graph: the fused one runs on CUDA only)"
                if spec.fused_graphs else _relative(spec, spec.onnx))
    usable: list[EngineRecord] = [graph for graph in spec.fused_graphs if graph.trt_version == version]
    if usable:
        return usable[-1].path, usable[-1].sha256, f"{_relative(spec, usable[-1].path)} (ONNX Runtime CUDA fusions)"
    if spec.fused_graphs:
        made = ", ".join(sorted({graph.trt_version for graph in spec.fused_graphs}))
        return (*plain, f"{_relative(spec, spec.onnx)} (plain graph: the fused graph was made by onnxruntime {made}, "
                        f"this is {version}; run `genrt build DIR --trt onnxruntime-cuda` again)")
    return (*plain, f"{_relative(spec, spec.onnx)} (plain graph: no fused graph, `genrt build DIR --trt "
                    "onnxruntime-cuda` makes one)")


def _relative(spec: ComponentEntry, path: Path) -> str:
    folder = spec.onnx.parent.parent
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession`` for one component's ONNX graph (``spec``'s, see :func:`pick_graph`, or ``model``:
    serialized ONNX bytes of a graph the runtime built itself, such as a loop's step graph, described by ``spec``).

    ``device="cpu"`` runs on the CPU with ``threads`` intra-op threads (0: ONNX Runtime's default);
    ``device="cuda"`` runs on GPU ``device_id`` with I/O binding, and with CUDA graphs unless ``cuda_graphs`` is
    False. ``options``: the session options (``OrtOptions``: spinning, memory arena, optimisation level).
    """

    tensor_type = OrtTensor

    def __init__(self, spec: ComponentEntry, device: str = "cpu", device_id: int = 0, threads: int = 0,
                 model: bytes | None = None, cuda_graphs: bool = True, options: OrtOptions = OrtOptions()):
        super().__init__(spec)
        if device not in ("cpu", "cuda"):
            raise GenrtError(f"unknown ONNX Runtime device '{device}'", fix="use 'cpu' or 'cuda'")
        self.device = device
        self.device_id = device_id
        self.threads = threads
        self.options = options
        self.model = model
        self.use_cuda_graphs = cuda_graphs and device == "cuda"
        self.backend_name = f"onnxruntime-{device}"
        self.tensor_device = "cpu" if device == "cpu" else f"cuda:{device_id}"
        self._session = None
        self._graphs: CudaGraphRuns | None = None  # CUDA-graph runs of the session (CUDA, when ONNX Runtime took them)
        self._graphs_off = "not on the CPU" if device == "cpu" else "turned off (cuda_graphs=False)"
        self._stream: cuda_stream.RunnerStream | None = None  # the CUDA session's own stream (with cuda-python)

    @property
    def cuda_graphs(self) -> str:
        return self._graphs.describe() if self._graphs is not None else f"off: {self._graphs_off}"

    @property
    def device_seconds(self) -> float | None:
        """GPU seconds of every call, from CUDA events on the runner's stream; None without one (the CPU, or
        CUDA without cuda-python: ``engine_seconds`` is the clock)."""
        return self._stream.timer.seconds() if self._stream is not None else None

    def _load_impl(self) -> None:
        ort = require("onnxruntime", extra="gpu" if self.device == "cuda" else "cpu")
        if self.model is not None:
            source, self.source = self.model, f"{self.spec.name} (built by the runtime)"
        else:
            fix = "export the model again with `genrt export`"
            path, digest, self.source = pick_graph(self.spec, self.device, ort.__version__)
            source = str(verified_file(path, digest, fix=fix if path == self.spec.onnx else
                                       "run `genrt build DIR --trt onnxruntime-cuda` again"))
            if self.spec.external_data is not None and path == self.spec.onnx:
                verified_file(self.spec.external_data, None, fix=fix)
            log.info("genrt: %s opens %s", self.spec.name, self.source)
        if self.device == "cuda":
            cudart = cuda_stream.cuda_runtime_or_none()
            self._stream = cuda_stream.RunnerStream(cudart, self.device_id) if cudart is not None else None
        try:
            self._session = self._open(source)
        except Exception as exc:  # ONNX Runtime raises its own exception types; its message is the clue
            self._close_impl()
            if isinstance(exc, GenrtError):
                raise
            raise GenrtError(f"ONNX Runtime cannot load {self.source}: {exc}",
                             fix="export the model again with `genrt export`") from None
        graph_inputs = sorted(item.name for item in self._session.get_inputs())
        graph_outputs = {item.name for item in self._session.get_outputs()}
        if graph_inputs != sorted(spec.name for spec in self.spec.inputs) or not {
                spec.name for spec in self.spec.outputs} <= graph_outputs:
            self._close_impl()
            raise ManifestError(f"{self.source} takes {', '.join(graph_inputs)}, but manifest.json lists "
                                f"{', '.join(spec.name for spec in self.spec.inputs)} for component '{self.spec.name}' "
                                "(another component's graph?)", fix="export the folder again with `genrt export --force`")

    def _open(self, source):
        """The session of ``source``: with CUDA graphs where asked and ONNX Runtime takes them, else without."""
        stream = None if self._stream is None else self._stream.handle
        if self.use_cuda_graphs:
            try:
                session = open_session(source, "cuda", self.device_id, self.threads, options=self.options,
                                       cuda_graph=True, stream=stream)
            except GenrtError:
                raise
            except Exception as exc:  # e.g. a node outside the CUDA provider: no graphs for this one
                self._graphs_off = f"ONNX Runtime refused CUDA graphs for this graph ({str(exc).splitlines()[0]})"
            else:
                ort = require("onnxruntime", extra="gpu")
                copy = DeviceCopy(lambda model: open_session(model, "cuda", self.device_id, options=UNOPTIMIZED))
                self._graphs = CudaGraphRuns(ort, session, self.spec, "cuda", self.device_id, copy)
                return session
        return open_session(source, self.device, self.device_id, self.threads, options=self.options, stream=stream)

    def _infer_impl(self, feeds: dict[str, Tensor], host: frozenset[str]) -> dict[str, Tensor]:
        if self._stream is None:
            return self._run(feeds, host)
        self._stream.timer.start()
        try:
            return self._run(feeds, host)
        finally:
            self._stream.timer.stop()

    def _run(self, feeds: dict[str, Tensor], host: frozenset[str]) -> dict[str, Tensor]:
        names = [spec.name for spec in self.spec.outputs]
        if self._graphs is not None:
            outputs = self._graphs.run(feeds, host)
            return {name: value if name in host else OrtTensor(value, self.tensor_device)
                    for name, value in outputs.items()}
        if self.device == "cpu" and len(host) == len(names) and all(isinstance(v, np.ndarray) for v in feeds.values()):
            return dict(zip(names, self._session.run(names, feeds)))
        binding = self._session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, OrtTensor):
                binding.bind_ortvalue_input(name, value.value)
            else:
                binding.bind_cpu_input(name, value)
        for name in names:
            binding.bind_output(name, "cpu" if name in host else self.device, self.device_id)
        self._session.run_with_iobinding(binding)
        return {name: value.numpy() if name in host else OrtTensor(value, self.tensor_device)
                for name, value in zip(names, binding.get_outputs())}

    def _upload_impl(self, array: np.ndarray) -> OrtTensor:
        ort = require("onnxruntime", extra="gpu" if self.device == "cuda" else "cpu")
        value = ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)
        return OrtTensor(value, self.tensor_device, host=array if self.device == "cpu" else None)

    def _close_impl(self) -> None:
        self._session = None
        self._graphs = None
        if self._stream is not None:  # after the session that runs on it
            self._stream.close()
            self._stream = None
