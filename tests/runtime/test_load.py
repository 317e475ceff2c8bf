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


def test_ort_options_open_every_session_and_leave_the_images_unchanged(folders):
    import numpy as np
    import onnxruntime as ort

    changed = genrt.runtime.OrtOptions(spinning=False, memory_arena=False, optimization="basic")
    images = {}
    for options in (genrt.runtime.OrtOptions(), changed):
        with genrt.runtime.load(folders["ldm"], backend="onnxruntime-cpu", threads=1, ort_options=options) as pipe:
            for name in ("text_encoder", "unet", "vae_decoder"):
                opened = pipe.runners[name]._session.get_session_options()
                assert opened.intra_op_num_threads == 1
                assert opened.enable_cpu_mem_arena is options.memory_arena
                assert opened.get_session_config_entry("session.intra_op.allow_spinning") == str(int(options.spinning))
                assert opened.graph_optimization_level == (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
                                                           if options is changed else
                                                           ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            images[options] = pipe("a red square", num_inference_steps=2, seed=0).images
    assert np.abs(images[changed].astype(int) - images[genrt.runtime.OrtOptions()].astype(int)).max() <= 1


def test_load_refuses_ort_options_that_are_not_an_ort_options(folders):
    with pytest.raises(InputError, match="ort_options=.*is not an OrtOptions"):
        genrt.runtime.load(folders["ldm"], backend="onnxruntime-cpu", ort_options={"spinning": False})
    with pytest.raises(InputError, match="optimisation level 'fast'"):
        genrt.runtime.OrtOptions(optimization="fast")
    with pytest.raises(InputError, match=r"OrtOptions\(spinning=0\) is not a bool"):
        genrt.runtime.OrtOptions(spinning=0)
