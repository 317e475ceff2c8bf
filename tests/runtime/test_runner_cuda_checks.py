"""ONNX Runtime CUDA and the run-time backend choice, with the GPU libraries faked at the module boundary:
preload_dlls before the first CUDA session of a torch-free process, a session that fell back to the CPU
refused, TF32 off, cuda_available asking for a device, and backend="auto" trying engines for this GPU, then
ONNX Runtime CUDA, then the CPU, with its reasons."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

import genrt.runtime.backends.choice as choice
import genrt.runtime.backends.cuda_stream as cuda_stream
import genrt.runtime.backends.gpu as gpu
import genrt.runtime.backends.onnxruntime as ort_backend
import genrt.runtime.backends.tensorrt as trt_backend
from genrt.errors import GenrtError, MissingDependencyError
from genrt.manifest import ComponentEntry, EngineRecord, TensorSpec, sha256_of
from genrt.runtime.backends import Runners
from genrt.runtime.backends.choice import resolve_backend
from tests.runtime.fake_gpu import FakeCudart, FakeOrt, FakeTensorRT

CUDA, CPU = ort_backend.CUDA_PROVIDER, ort_backend.CPU_PROVIDER


@pytest.fixture
def fake_ort(monkeypatch):
    def install(**kwargs):
        fake = FakeOrt(**kwargs)
        monkeypatch.setattr(ort_backend, "require", lambda module, extra: fake)
        monkeypatch.setattr(gpu, "device_count", lambda: 1)
        monkeypatch.setattr(cuda_stream, "cuda_runtime_or_none", lambda: None)
        return fake
    return install


def test_cuda_session_preloads_the_libraries_once_without_torch_and_turns_tf32_off(fake_ort, monkeypatch):
    fake = fake_ort()
    monkeypatch.setattr(ort_backend, "torch_imported", lambda: False)
    for _ in range(2):
        ort_backend.open_session(b"graph", "cuda", device_id=1)
    assert fake.preloads == 1
    provider, options = fake.sessions[0].asked[0]
    assert provider == CUDA and options == {"device_id": 1, "use_tf32": "0"}


def test_no_preload_when_torch_loaded_its_libraries(fake_ort, monkeypatch):
    fake = fake_ort()
    monkeypatch.setattr(ort_backend, "torch_imported", lambda: True)
    ort_backend.open_session(b"graph", "cuda")
    assert fake.preloads == 0


def test_a_session_that_fell_back_to_the_cpu_is_refused(fake_ort, monkeypatch):
    fake_ort(lands_on=[CPU])
    monkeypatch.setattr(ort_backend, "torch_imported", lambda: True)
    with pytest.raises(GenrtError, match=r"ONNX Runtime fell back to CPUExecutionProvider.*fix: pip install 'genrt\[gpu\]'"):
        ort_backend.open_session(b"graph", "cuda")


def test_cuda_available_needs_the_provider_and_a_device(fake_ort, monkeypatch):
    fake_ort()
    assert ort_backend.cuda_available() and ort_backend.cuda_missing() is None
    monkeypatch.setattr(gpu, "device_count", lambda: 0)  # onnxruntime-gpu installed, no GPU
    assert not ort_backend.cuda_available() and ort_backend.cuda_missing() == "the NVIDIA driver sees no GPU"
    fake_ort(providers=[CPU])
    assert "no CUDA provider" in ort_backend.cuda_missing()


def test_gpu_device_count_is_zero_without_a_driver(monkeypatch):
    monkeypatch.setattr(gpu, "_driver", lambda: None)
    assert gpu.device_count.__wrapped__() == 0
    monkeypatch.setattr(gpu, "device_count", lambda: 0)
    assert gpu.compute_capability(0) is None


# -- backend="auto" ------------------------------------------------------------------------------------
def manifest_with(engines: tuple) -> SimpleNamespace:
    entry = ComponentEntry(name="unet", onnx=Path("unet.onnx"), external_data=None, sha256="",
                           inputs=(TensorSpec("x", "float32", (1,)),), outputs=(TensorSpec("y", "float32", (1,)),),
                           profile={}, fp32_islands=(), engines=engines)
    return SimpleNamespace(root=Path("/exports/sd"), components={"unet": entry}, component=lambda name: entry)


def engine(capabilities, flavour="tensorrt_rtx", path=Path("unet.plan")):
    return EngineRecord(path=path, key="k", flavour=flavour, trt_version=FakeTensorRT.__version__,
                        compute_capabilities=capabilities, static=False, sha256=None)


@pytest.fixture
def machine(monkeypatch):
    """A GPU of compute capability ``capability`` with TensorRT-RTX and ONNX Runtime CUDA (both fakes)."""
    def install(capability="8.6", trt=True, ort_cuda=True):
        cudart = FakeCudart()
        real_require = trt_backend.require
        monkeypatch.setattr(gpu, "compute_capability", lambda device_id=0: capability)
        monkeypatch.setattr(trt_backend, "cuda_runtime", lambda: cudart)
        monkeypatch.setattr(trt_backend, "require", lambda module, extra: FakeTensorRT(cudart)
                            if module == "tensorrt_rtx" and trt else real_require(module, extra))
        monkeypatch.setattr(choice, "cuda_missing", lambda: None if ort_cuda else "the NVIDIA driver sees no GPU")
    return install


def test_auto_takes_engines_built_for_this_gpu(machine):
    machine(capability="8.6")
    picked = resolve_backend("auto", manifest_with((engine(("8.6", "8.9")),)))
    assert picked.backend == "tensorrt" and picked.reason == "auto: engines for this GPU"


def test_auto_on_a_gpu_the_engines_do_not_serve_falls_back_to_onnxruntime_cuda(machine):
    machine(capability="9.0")  # Hopper: not a TensorRT-RTX target
    picked = resolve_backend("auto", manifest_with((engine(("8.6",)),)))
    assert picked.backend == "onnxruntime-cuda"
    assert "not tensorrt: unet: no engine for this GPU (compute capability 9.0" in picked.reason


def test_a_fused_onnxruntime_cuda_graph_is_not_a_tensorrt_engine(machine):
    machine(capability="8.6")
    picked = resolve_backend("auto", manifest_with((engine((), flavour="onnxruntime-cuda"),)))
    assert picked.backend == "onnxruntime-cuda"
    assert picked.reason == "auto: not tensorrt: no engines built for unet (genrt build)"


@pytest.mark.parametrize("capability, fix", [
    ("9.0", "TensorRT-RTX cannot target this GPU: build with standard TensorRT on it"),  # a rebuild cannot help
    ("8.9", "run `genrt build DIR` again on this machine"),  # TensorRT-RTX can build for 8.9
])
def test_tensorrt_rtx_engines_for_another_gpu_name_the_fix_that_works_here(machine, capability, fix):
    machine(capability=capability)
    with pytest.raises(GenrtError, match=f"no engine for this GPU \\(compute capability {capability}") as info:
        trt_backend.pick_engine(manifest_with((engine(("8.6",)),)).components["unet"], ["tensorrt_rtx"], capability)
    assert info.value.fix.startswith(fix)


def test_auto_without_engines_or_cuda_is_the_cpu_with_both_reasons(machine):
    machine(ort_cuda=False)
    picked = resolve_backend("auto", manifest_with(()))
    assert picked.backend == "onnxruntime-cpu"
    assert picked.reason == ("auto: not tensorrt: no engines built for unet (genrt build); "
                             "not onnxruntime-cuda: the NVIDIA driver sees no GPU")
    assert str(picked).startswith("onnxruntime-cpu (auto: ")


def test_auto_is_an_error_only_when_nothing_can_run(machine, monkeypatch):
    machine(ort_cuda=False)

    def missing(module, extra):
        raise MissingDependencyError(module, extra)

    monkeypatch.setattr(choice, "require", missing)
    with pytest.raises(GenrtError, match=r"no backend can run /exports/sd: not tensorrt.*onnxruntime is not installed"):
        resolve_backend("auto", manifest_with(()))
    assert resolve_backend("onnxruntime-cpu", manifest_with(())).reason == "as asked"


def test_auto_gives_way_when_the_chosen_backend_does_not_open(fake_ort, machine, monkeypatch, tmp_path, caplog):
    """ONNX Runtime CUDA looks available but its sessions land on the CPU provider: auto opens the CPU instead."""
    machine(ort_cuda=True)
    fake_ort(lands_on=[CPU])
    monkeypatch.setattr(ort_backend, "torch_imported", lambda: True)
    graph = tmp_path / "unet.onnx"
    graph.write_bytes(b"graph")
    manifest = manifest_with(())
    entry = dataclasses.replace(manifest.components["unet"], onnx=graph, sha256=sha256_of(graph))
    manifest = SimpleNamespace(root=tmp_path, components={"unet": entry}, component=lambda name: entry)
    with Runners(manifest, ["unet"], backend="auto") as runners:
        assert runners.backend == "onnxruntime-cpu" and runners["unet"].backend_name == "onnxruntime-cpu"
        assert runners.choice.reason.startswith("auto: not tensorrt: no engines built for unet")
        assert "; not onnxruntime-cuda: ONNX Runtime fell back to CPUExecutionProvider" in runners.choice.reason
    assert [record.getMessage() for record in caplog.records] == [f"genrt: running on {runners.choice}"]
    with pytest.raises(GenrtError, match="ONNX Runtime fell back"):  # asked by name: no way out
        Runners(manifest, ["unet"], backend="onnxruntime-cuda")
