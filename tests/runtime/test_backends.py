import dataclasses

import numpy as np
import pytest
import torch

from genrt.errors import GenrtError, InputError
from genrt.runtime.backends import Runners, resolve_backend
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner
from genrt.manifest import ManifestError, read_manifest
from genrt.settings import LdmSettings
from tests.conftest import relative_error
from tests.raw_manifest import rewrite_manifest
from tests.runtime.tiny.common import run_in_threads
from tests.runtime.tiny.exports import export_component, write_manifest

PROFILE = {"sample": {"min": [1, 4, 8, 8], "opt": [2, 4, 16, 16], "max": [4, 4, 32, 32]},
           "timestep": {"min": [1], "opt": [2], "max": [4]}}
# An ldm manifest needs ldm settings; these runner tests never read them.
SETTINGS = LdmSettings(scheduler={}, latent_scaling_factor=1.0, guidance_scale=1.0, image_size=128, latent_channels=4,
                       vae_factor=8, max_length=1)


class TinyDenoiser(torch.nn.Module):
    """(B, 4, h, w), (B,) -> (B, 4, h, w): a conv plus a timestep-dependent shift."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, sample, timestep):
        return self.conv(sample) + torch.sin(timestep)[:, None, None, None]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    entry = export_component(
        root, "unet", TinyDenoiser(),
        inputs=[("sample", np.zeros((2, 4, 16, 16), np.float32), ("B", 4, "h", "w")),
                ("timestep", np.zeros((2,), np.float32), ("B",))],
        outputs=[("model_output", "float32", ("B", 4, "h", "w"))], profile=PROFILE)
    return write_manifest(root, "ldm", {"unet": entry}, SETTINGS)


@pytest.fixture(scope="module")
def runner(export_dir):
    with OnnxRuntimeRunner(read_manifest(export_dir).component("unet"), threads=1) as opened:
        yield opened


def feeds(batch=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"sample": rng.standard_normal((batch, 4, size, size), dtype=np.float32),
            "timestep": rng.uniform(0, 999, batch).astype(np.float32)}


def test_onnxruntime_cpu_matches_torch(runner):
    inputs = feeds(batch=3, size=24)
    out = runner.infer(inputs)
    expected = TinyDenoiser()(*(torch.from_numpy(inputs[k]) for k in ("sample", "timestep")))
    assert list(out) == ["model_output"]
    assert out["model_output"].shape == (3, 4, 24, 24) and out["model_output"].dtype == np.float32
    assert relative_error(out["model_output"], expected) < 1e-5


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("timestep"), "missing timestep"),
    (lambda f: f.update(extra=np.zeros(1, np.float32)), "unexpected extra"),
    (lambda f: f.update(timestep=f["timestep"].astype(np.float64)), "has dtype float64, expected float32"),
    (lambda f: f.update(sample=f["sample"][0]), "expected rank 4 (B, 4, h, w)"),
    (lambda f: f.update(sample=np.zeros((2, 3, 16, 16), np.float32)), "axis 1 must be 4"),
    (lambda f: f.update(timestep=np.zeros(3, np.float32)), "'B' is 3 here but 2 in input 'sample'"),
    (lambda f: f.update(sample=np.zeros((2, 4, 64, 16), np.float32)),
     "received (2, 4, 64, 16) | expected a shape within (1, 4, 8, 8) .. (4, 4, 32, 32)"),
    (lambda f: f.update(sample=[[0.0]]), "is a list"),
])
def test_infer_validates_feeds(runner, change, message):
    bad = feeds()
    change(bad)
    with pytest.raises(InputError) as info:
        runner.infer(bad)
    assert message in str(info.value)
    assert "fix:" in str(info.value)


def test_concurrent_infer_gives_serial_results(runner):
    inputs = [feeds(seed=seed) for seed in range(8)]
    serial = [runner.infer(f)["model_output"] for f in inputs]

    def work(index):
        for _ in range(3):
            output = runner.infer(inputs[index])["model_output"]
        return output

    results = run_in_threads(work, len(inputs))
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


def test_runners_auto_is_cpu_here_and_unknown_backend_is_refused(export_dir):
    manifest = read_manifest(export_dir)
    with Runners(manifest, ["unet"], backend="auto", threads=1) as runners:
        assert runners.backend == "onnxruntime-cpu"
        assert runners.choice.reason.startswith("auto: not tensorrt: no engines built for unet (genrt build); "
                                                "not onnxruntime-cuda: ")
        assert runners["unet"].infer(feeds())["model_output"].shape == (2, 4, 16, 16)
    with pytest.raises(GenrtError, match="unknown backend 'tensorrt-llm'.*fix: use one of: auto, tensorrt"):
        resolve_backend("tensorrt-llm", manifest)
    with pytest.raises(ManifestError, match="has no component 'vae_decoder'"):
        Runners(manifest, ["vae_decoder"], backend="onnxruntime-cpu")


def test_missing_and_corrupted_graph(export_dir, tmp_path):
    entry = read_manifest(export_dir).component("unet")
    (tmp_path / "unet").mkdir()
    write_manifest(tmp_path, "ldm", {"unet": dataclasses.replace(entry, onnx=tmp_path / "unet" / "model.onnx")},
                   SETTINGS)
    spec = read_manifest(tmp_path).component("unet")
    with pytest.raises(ManifestError, match=r"unet/model.onnx listed in manifest.json is missing .*genrt export"):
        OnnxRuntimeRunner(spec).load()
    data = bytearray((export_dir / "unet" / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "unet" / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model.onnx is corrupted \(its sha256 does not match"):
        OnnxRuntimeRunner(spec).load()


def test_manifest_of_another_schema_or_family(tmp_path):
    write_manifest(tmp_path, "ldm", {}, SETTINGS, schema_version=1)
    with pytest.raises(ManifestError, match="schema_version 1; this genrt .* reads schema_version 2.*re-export"):
        read_manifest(tmp_path)
    rewrite_manifest(tmp_path, {"schema_version": 2, "family": "gan"})
    with pytest.raises(ManifestError, match="unknown model family 'gan'"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="has no manifest.json"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        read_manifest(tmp_path)


def test_manifest_fields_are_parsed(export_dir):
    manifest = read_manifest(export_dir)
    spec = manifest.component("unet")
    assert (manifest.family, manifest.precision) == ("ldm", "fp32")
    assert spec.onnx == export_dir.resolve() / "unet" / "model.onnx"
    assert [t.name for t in spec.inputs] == ["sample", "timestep"]
    assert spec.input("sample").shape == ("B", 4, "h", "w")
    assert spec.profile["sample"].max == (4, 4, 32, 32)
