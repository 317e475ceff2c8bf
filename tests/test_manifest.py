"""genrt.manifest: the one reader and writer of manifest.json, typed settings, one version rule."""

from __future__ import annotations

import dataclasses
import json

import pytest

import genrt.runtime
from genrt.manifest import SCHEMA_VERSION, Manifest, ManifestError, read_manifest, write_manifest
from genrt.settings import ImagenSettings, LdmSettings
from tests.raw_manifest import rewrite_manifest
from tests.runtime.tiny.imagen import build_imagen
from tests.runtime.tiny.ldm import build_ldm


@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory):
    return build_ldm(tmp_path_factory.mktemp("ldm"))


def test_written_manifest_reads_back_through_the_runtime(ldm_dir):
    manifest = read_manifest(ldm_dir)
    assert manifest.schema_version == SCHEMA_VERSION and isinstance(manifest.settings, LdmSettings)
    assert manifest.settings.num_steps == 4 and manifest.settings.tokenizer.folder == "tokenizer/"
    unet = manifest.component("unet")
    assert unet.onnx == ldm_dir.resolve() / "unet" / "model.onnx" and unet.profile["sample"].max == (8, 4, 16, 16)
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json())), manifest.root) == manifest
    data = json.loads((ldm_dir / "manifest.json").read_text())
    assert data["components"]["unet"]["onnx"] == "unet/model.onnx" and "name" not in data["components"]["unet"]
    assert "root" not in data and data["settings"]["sampler"] == "ddim"
    with genrt.runtime.load(ldm_dir, backend="onnxruntime-cpu", threads=1) as pipe:
        assert isinstance(pipe, genrt.runtime.LatentDiffusionPipeline)
        assert pipe.manifest == manifest and (pipe.default_steps, pipe.default_guidance) == (4, 5.0)


def test_imagen_settings_are_a_tuple_of_stages(tmp_path):
    settings = read_manifest(build_imagen(tmp_path)).settings
    assert isinstance(settings, ImagenSettings)
    assert [(s.component, s.resolution, s.num_steps, s.guidance_scale) for s in settings.stages] == [
        ("base_unet", 8, 3, 5.0), ("sr_unet_256", 16, 2, 3.0), ("sr_unet_1024", 32, 2, 2.0)]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["settings"].update(guidance_scales=[1.0]),
     r"manifest.json: settings has unknown key\(s\) guidance_scales"),
    (lambda d: d["settings"].update(num_steps="4"), r"settings.num_steps is str '4', expected int"),
    (lambda d: d["settings"].pop("latent_scaling_factor"), r"settings lacks the key 'latent_scaling_factor'"),
    (lambda d: d["components"]["unet"]["inputs"][0].update(dtype="float8"), r"tensor 'sample' has unknown dtype"),
    (lambda d: d["components"]["unet"].update(nodez=1), r"components.unet has unknown key\(s\) nodez"),
    (lambda d: d["components"]["unet"]["profile"]["sample"].update(max=[8, 4]),
     r"manifest.json: components.unet.profile.sample: shape range .* mixes ranks"),
    (lambda d: d.update(schema_version=1), r"schema_version 1; this genrt .* reads schema_version 2 .*re-export"),
    (lambda d: d.update(family="gan"), r"unknown model family 'gan'"),
])
def test_malformed_manifests_are_refused_by_name(ldm_dir, tmp_path, change, message):
    (tmp_path / "manifest.json").write_text((ldm_dir / "manifest.json").read_text())
    rewrite_manifest(tmp_path, change)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_settings_of_another_family_are_refused(ldm_dir, tmp_path):
    manifest = read_manifest(ldm_dir)
    imagen = read_manifest(build_imagen(tmp_path / "imagen"))
    with pytest.raises(ManifestError, match="the ldm manifest carries ImagenSettings, not LdmSettings"):
        dataclasses.replace(manifest, settings=imagen.settings)


def test_writer_replaces_the_file_atomically(ldm_dir, tmp_path):
    (tmp_path / "unet").mkdir()
    manifest = read_manifest(ldm_dir)
    unet = dataclasses.replace(manifest.component("unet"), onnx=tmp_path / "unet" / "model.onnx")
    written = write_manifest(dataclasses.replace(manifest, root=tmp_path, components={"unet": unet}))
    assert written == tmp_path / "manifest.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "unet"]  # no partial file left
    assert list(read_manifest(tmp_path).components) == ["unet"]
