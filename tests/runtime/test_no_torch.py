"""The runtime, its three pipelines and `genrt run` work in a process where torch cannot be imported.

The folders are exported here (with torch); a child Python process installs an import hook that
refuses and records every attempt to import torch (or transformers / diffusers / genrt.sdk), then imports every
runtime module and generates images. Any attempt fails the test, even one a module caught.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.runtime.tiny.imagen import build_imagen
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan
from tests.torch_blocker import TORCH_BLOCKER

CHILD = TORCH_BLOCKER + textwrap.dedent("""
    import genrt.runtime
    import genrt.runtime.backends, genrt.runtime.pipelines, genrt.sampling
    modules = []
    for package in (genrt.runtime,):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
            modules.append(info.name)

    ldm_dir, vqgan_dir, imagen_dir, out = sys.argv[1:5]
    shapes = {}
    with genrt.runtime.load(ldm_dir, backend="onnxruntime-cpu") as pipe:
        shapes["ldm"] = list(pipe("a cat", seed=0, num_inference_steps=2).images.shape)
    with genrt.runtime.load(vqgan_dir, backend="auto") as pipe:
        shapes["vqgan"] = [pipe.backend] + list(pipe([1], seed=0).images.shape)
    with genrt.runtime.load(imagen_dir, backend="onnxruntime-cpu") as pipe:
        shapes["imagen"] = list(pipe("a cat", seed=0, num_inference_steps=1).images.shape)
    from genrt.cli import main
    code = main(["run", ldm_dir, "--prompt", "a cat", "--out", out, "--steps", "2", "--seed", "3",
                 "--backend", "onnxruntime-cpu", "--no-progress"])
    print(json.dumps({"attempts": attempts, "modules": modules, "shapes": shapes, "cli": code}))
""")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return (build_ldm(tmp_path_factory.mktemp("ldm")), build_vqgan(tmp_path_factory.mktemp("vqgan")),
            build_imagen(tmp_path_factory.mktemp("imagen")))


def test_runtime_runs_with_torch_unimportable(folders, tmp_path):
    out = tmp_path / "cat.png"
    completed = subprocess.run([sys.executable, "-c", CHILD, *map(str, folders), str(out)], capture_output=True,
                               text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert {"genrt.runtime.backends.tensorrt", "genrt.runtime.backends.onnxruntime", "genrt.runtime.cli",
            "genrt.runtime.pipelines.ldm", "genrt.runtime.pipelines.vqgan",
            "genrt.runtime.pipelines.imagen"} <= set(report["modules"])
    assert report["shapes"] == {"ldm": [1, 64, 64, 3], "vqgan": ["onnxruntime-cpu", 1, 16, 16, 3],
                                "imagen": [1, 32, 32, 3]}
    assert report["cli"] == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
