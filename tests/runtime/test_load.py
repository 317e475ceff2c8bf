"""genrt.runtime.load: the family's pipeline class from the registry, with explicit typed options."""

from __future__ import annotations

import pytest

import genrt.runtime
from genrt.errors import InputError
from tests.runtime.tiny.imagen import build_imagen
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in
            (("ldm", build_ldm), ("vqgan", build_vqgan), ("imagen", build_imagen))}


@pytest.mark.parametrize("family, cls", [("ldm", genrt.runtime.LatentDiffusionPipeline),
                                         ("vqgan", genrt.runtime.VQGANPipeline),
                                         ("imagen", genrt.runtime.ImagenPipeline)])
def test_load_returns_the_family_pipeline_on_the_device_and_cuda_graph_setting_asked_for(folders, family, cls):
    with genrt.runtime.load(folders[family], backend="onnxruntime-cpu", device_id=1, threads=1,
                            cuda_graphs=False) as pipe:
        assert (type(pipe), pipe.family, pipe.backend) == (cls, family, "onnxruntime-cpu")
        assert pipe.runners.device_id == 1  # carried to the runners (the CPU provider ignores it)
        assert pipe.runners.cuda_graphs is False


def test_load_refuses_options_the_family_does_not_take(folders):
    with pytest.raises(InputError, match="the vqgan pipeline takes no sampler"):
        genrt.runtime.load(folders["vqgan"], backend="onnxruntime-cpu", sampler="ddim")
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        genrt.runtime.load(folders["ldm"], backend="onnxruntime-cpu", steps=4)
