"""CPU sessions on ONNX Runtime's OpenVINO execution provider (``OrtOptions(cpu_provider="openvino")``).

onnxruntime-openvino installs the same ``onnxruntime`` module as the CPU build, so it has an environment of its own
(``make openvino-env``); the tests that run it drive that interpreter, ``GENRT_OPENVINO_PYTHON`` (``make test`` sets
it), and skip where it is not set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import genrt.runtime
from genrt.errors import GenrtError, InputError
from tests.runtime.tiny.ldm import build_ldm

ROOT = Path(__file__).resolve().parents[2]
OPENVINO_PYTHON = os.environ.get("GENRT_OPENVINO_PYTHON")
needs_openvino = pytest.mark.skipif(not OPENVINO_PYTHON or not Path(OPENVINO_PYTHON).is_file(),
                                    reason="GENRT_OPENVINO_PYTHON is not an interpreter (make openvino-env)")

# Run by the OpenVINO interpreter: the ldm folder's images and the provider of every session.
DRAW = """
import json, sys
import numpy as np
import genrt.runtime
folder, precision, out = sys.argv[1:]
options = genrt.runtime.OrtOptions(cpu_provider="openvino", openvino_precision=precision)
with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1, ort_options=options) as pipe:
    images = pipe("a red square", num_inference_steps=2, seed=0).images
    providers = {name: pipe.runners[name]._session.get_providers()[0] for name in ("text_encoder", "unet", "vae_decoder")}
np.save(out, images)
print(json.dumps(providers))
"""


def test_cpu_provider_and_openvino_precision_are_checked():
    with pytest.raises(InputError, match="unknown CPU provider 'dnnl'"):
        genrt.runtime.OrtOptions(cpu_provider="dnnl")
    with pytest.raises(InputError, match="unknown OpenVINO precision 'fp16'"):
        genrt.runtime.OrtOptions(cpu_provider="openvino", openvino_precision="fp16")
    options = genrt.runtime.OrtOptions(cpu_provider="openvino", openvino_precision="bf16").openvino_provider_options(2)
    assert options["device_type"] == "CPU" and options["num_of_threads"] == "2"
    assert json.loads(options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}
    assert "num_of_threads" not in genrt.runtime.OrtOptions().openvino_provider_options(0)


def test_a_missing_openvino_provider_names_the_extra(tmp_path):
    import onnxruntime

    if "OpenVINOExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the OpenVINO provider")
    folder = build_ldm(tmp_path / "ldm")
    options = genrt.runtime.OrtOptions(cpu_provider="openvino")
    with pytest.raises(GenrtError, match=r"no OpenVINO execution provider.*genrt\[openvino\]"):
        with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1, ort_options=options) as pipe:
            pipe("a red square", num_inference_steps=2, seed=0)


@needs_openvino
@pytest.mark.parametrize("precision, max_bound, mean_bound", [("f32", 2, 0.5), ("bf16", 64, 2.0)])
def test_the_ldm_pipeline_on_openvino_draws_what_onnx_runtime_draws(tmp_path, precision, max_bound, mean_bound):
    """f32 draws ONNX Runtime's image (measured: identical); bf16 keeps about 3 significant digits, which the toy
    models' random weights amplify at a few pixels (measured: max 44/255, mean 0.7/255)."""
    folder = build_ldm(tmp_path / "ldm")
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1) as pipe:
        expected = pipe("a red square", num_inference_steps=2, seed=0).images
    out = tmp_path / "openvino.npy"
    done = subprocess.run([OPENVINO_PYTHON, "-c", DRAW, str(folder), precision, str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    providers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(providers.values()) == {"OpenVINOExecutionProvider"}
    drawn = np.load(out)
    assert drawn.shape == expected.shape and drawn.dtype == expected.dtype == np.uint8
    difference = np.abs(drawn.astype(int) - expected.astype(int))
    assert difference.max() <= max_bound and difference.mean() <= mean_bound, \
        f"{precision}: max {difference.max()}/255, mean {difference.mean():.2f}/255 from ONNX Runtime's own kernels"
