"""Bad input to every runtime API entry point: a GenrtError (InputError) with a fix, never TypeError,
KeyError, ValueError or a result computed from truncated or non-finite numbers."""

from __future__ import annotations

import numpy as np
import pytest

import genrt.runtime
from genrt.errors import GenrtError, InputError

NAN, INF = float("nan"), float("inf")
IMAGE = np.zeros((1, 64, 64, 3), np.uint8)

# (family, method, positional arguments, keyword arguments, text the message must contain)
CASES = [
    ("ldm", "__call__", (5,), {}, "prompt must be a string"),
    ("ldm", "__call__", (None,), {}, "prompt must be a string"),
    ("ldm", "__call__", ([],), {}, "prompt must be a string"),
    ("ldm", "__call__", ([1, 2],), {}, "prompt must be a string"),
    ("ldm", "__call__", ({"a": 1},), {}, "prompt must be a string"),
    ("ldm", "__call__", (b"bytes",), {}, "prompt must be a string"),
    ("ldm", "__call__", ("a",), {"negative_prompt": 7}, "negative_prompt must be a string"),
    ("ldm", "__call__", ("a",), {"negative_prompt": [None]}, "negative_prompt must be a string"),
    ("ldm", "__call__", ("a",), {"seed": 1.5}, "seed is 1.5 (float)"),
    ("ldm", "__call__", ("a",), {"seed": -1}, "seed is -1"),
    ("ldm", "__call__", ("a",), {"seed": 2**70}, "seed is 1180591620717411303424"),
    ("ldm", "__call__", ("a",), {"seed": "1"}, "seed is '1' (str)"),
    ("ldm", "__call__", ("a",), {"seed": True}, "seed is True (bool)"),
    ("ldm", "__call__", ("a",), {"height": "32"}, "height is '32' (str)"),
    ("ldm", "__call__", ("a",), {"height": 32.0}, "height is 32.0 (float)"),
    ("ldm", "__call__", ("a",), {"height": 60}, "height is 60; expected a multiple of 8 in [32, 128]"),
    ("ldm", "__call__", ("a",), {"height": 0}, "height is 0"),
    ("ldm", "__call__", ("a",), {"width": -64}, "width is -64"),
    ("ldm", "__call__", ("a",), {"height": 10**6, "width": 10**6}, "height is 1000000"),
    ("ldm", "__call__", ("a",), {"num_inference_steps": 2.7}, "num_inference_steps is 2.7 (float)"),
    ("ldm", "__call__", ("a",), {"num_inference_steps": 0}, "num_inference_steps is 0"),
    ("ldm", "__call__", ("a",), {"num_inference_steps": True}, "num_inference_steps is True (bool)"),
    ("ldm", "__call__", ("a",), {"num_inference_steps": 10**6}, "num_inference_steps is 1000000"),
    ("ldm", "__call__", ("a",), {"guidance_scale": NAN}, "guidance_scale is nan"),
    ("ldm", "__call__", ("a",), {"guidance_scale": INF}, "guidance_scale is inf"),
    ("ldm", "__call__", ("a",), {"guidance_scale": "7"}, "guidance_scale is '7' (str)"),
    ("ldm", "__call__", ("a",), {"guidance_scale": 1e30}, "guidance_scale is 1e+30"),
    ("ldm", "__call__", ("a",), {"image": IMAGE, "strength": NAN}, "strength is nan"),
    ("ldm", "__call__", ("a",), {"image": IMAGE, "strength": 0.0}, "strength is 0.0"),
    ("ldm", "__call__", ("a",), {"image": IMAGE, "strength": 1.5}, "strength is 1.5"),
    ("ldm", "__call__", ("a",), {"image": IMAGE[..., 0]}, "image has dtype uint8 and shape (1, 64, 64)"),
    ("ldm", "__call__", (["a"] * 100,), {}, "input_ids"),
    ("ldm", "__call__", (["a", "word " * 40],), {"truncate": False}, "prompt 'word word word word word wo...' has"),
    ("vqgan", "__call__", (), {"temperature": NAN}, "temperature is nan"),
    ("vqgan", "__call__", (), {"temperature": INF}, "temperature is inf"),
    ("vqgan", "__call__", (), {"temperature": 0}, "temperature is 0"),
    ("vqgan", "__call__", (), {"temperature": -1.0}, "temperature is -1.0"),
    ("vqgan", "__call__", (), {"temperature": "1"}, "temperature is '1' (str)"),
    ("vqgan", "__call__", (), {"top_k": 2.5}, "top_k is 2.5 (float)"),
    ("vqgan", "__call__", (), {"top_k": 0}, "top_k is 0"),
    ("vqgan", "__call__", (), {"top_k": 10**9}, "top_k is 1000000000"),
    ("vqgan", "__call__", (), {"top_k": True}, "top_k is True (bool)"),
    ("vqgan", "__call__", (), {"top_p": NAN}, "top_p is nan"),
    ("vqgan", "__call__", (), {"top_p": 0.0}, "top_p is 0.0"),
    ("vqgan", "__call__", (), {"top_p": 1.5}, "top_p is 1.5"),
    ("vqgan", "__call__", (), {"batch_size": 0}, "batch_size is 0"),
    ("vqgan", "__call__", (), {"batch_size": 2.5}, "batch_size is 2.5 (float)"),
    ("vqgan", "__call__", (), {"grid": (0, 4)}, "grid is (0, 4)"),
    ("vqgan", "__call__", (), {"grid": (2.5, 4)}, "grid is (2.5, 4)"),
    ("vqgan", "__call__", (), {"grid": "44"}, "grid is '44'"),
    ("vqgan", "__call__", (), {"grid": (64, 64)}, "grid 64x64 is outside the decoder's range"),
    ("vqgan", "__call__", (-1,), {}, "condition ids span [-1, -1]"),
    ("vqgan", "__call__", (10**6,), {}, "condition ids span [1000000, 1000000]"),
    ("vqgan", "__call__", (2.5,), {}, "condition has shape (1, 1) and dtype float64"),
    ("vqgan", "__call__", ("a",), {}, "condition has shape"),
    ("vqgan", "__call__", (), {"seed": -1}, "seed is -1"),
    ("vqgan", "decode", (np.full((1, 4, 4), -1),), {}, "indices span [-1, -1]"),
    ("vqgan", "decode", (np.full((1, 4, 4), 10**6),), {}, "indices span [1000000, 1000000]"),
    ("vqgan", "decode", (np.zeros((1, 4, 4)),), {}, "indices have shape (1, 4, 4) and dtype float64"),
    ("vqgan", "decode", (np.zeros((4, 4), np.int64),), {}, "indices have shape (4, 4)"),
    ("vqgan", "encode", (np.zeros((16, 16, 3), np.float32),), {}, "image has dtype float32"),
    ("imagen", "__call__", (5,), {}, "prompt must be a string"),
    ("imagen", "__call__", ("a",), {"num_inference_steps": 2.7}, "num_inference_steps is 2.7 (float)"),
    ("imagen", "__call__", ("a",), {"num_inference_steps": [1, 0, 1]}, "num_inference_steps is 0"),
    ("imagen", "__call__", ("a",), {"num_inference_steps": [1]}, "num_inference_steps has 1 values for 3 stages"),
    ("imagen", "__call__", ("a",), {"num_inference_steps": "3"}, "num_inference_steps is '3' (str)"),
    ("imagen", "__call__", ("a",), {"guidance_scale": NAN}, "guidance_scale is nan"),
    ("imagen", "__call__", ("a",), {"guidance_scale": [1.0, INF, 1.0]}, "guidance_scale is inf"),
    ("imagen", "__call__", ("a",), {"stages": 0}, "stages is 0"),
    ("imagen", "__call__", ("a",), {"stages": 4}, "stages is 4; this export has 3"),
    ("imagen", "__call__", ("a",), {"stages": 1.5}, "stages is 1.5 (float)"),
    ("imagen", "__call__", ("a",), {"noise_level": -1}, "noise_level is -1"),
    ("imagen", "__call__", ("a",), {"noise_level": 1000}, "noise_level is 1000"),
    ("imagen", "__call__", ("a",), {"noise_level": 2.5}, "noise_level is 2.5 (float)"),
    ("imagen", "__call__", ("a",), {"seed": -1}, "seed is -1"),
]


@pytest.fixture(scope="module")
def pipes(folders):
    opened = {family: genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1)
              for family, folder in folders.items()}
    yield opened
    for pipe in opened.values():
        pipe.close()


@pytest.mark.parametrize("family, method, args, kwargs, message", CASES,
                         ids=[f"{c[0]}.{c[1]}:{c[4][:30]}" for c in CASES])
def test_api_refuses(pipes, family, method, args, kwargs, message):
    with pytest.raises(InputError) as info:
        getattr(pipes[family], method)(*args, **kwargs)
    assert message in str(info.value) and "(fix: " in str(info.value), str(info.value)


@pytest.mark.parametrize("family, call", [
    ("ldm", lambda pipe: pipe("a", num_inference_steps=1)),
    ("vqgan", lambda pipe: pipe()),
    ("vqgan", lambda pipe: pipe.decode(np.zeros((1, 4, 4), np.int64))),
    ("vqgan", lambda pipe: pipe.encode(np.zeros((16, 16, 3), np.uint8))),
    ("imagen", lambda pipe: pipe("a", num_inference_steps=1)),
])
def test_a_closed_pipeline_refuses(folders, family, call):
    pipe = genrt.runtime.load(folders[family], backend="onnxruntime-cpu", threads=1)
    pipe.close()
    with pytest.raises(GenrtError, match="pipeline of .* is closed"):
        call(pipe)


def test_good_calls_still_run(pipes):
    """The checks refuse only bad values: numpy integers and in-range values pass."""
    assert pipes["ldm"]("a", num_inference_steps=np.int64(1), seed=np.uint32(3), height=32,
                        width=40).images.shape == (1, 32, 40, 3)
    assert pipes["vqgan"](np.array([1]), top_k=np.int32(3), top_p=1.0, temperature=0.5, seed=0).images.shape[0] == 1
    assert pipes["imagen"]("a", num_inference_steps=[1, 1, 1], stages=1, seed=2**63 - 1).images.shape == (1, 8, 8, 3)


@pytest.mark.parametrize("option, value, message", [
    ("backend", "cuda", "backend is 'cuda' (str); expected one of auto, tensorrt, onnxruntime-cuda, onnxruntime-cpu"),
    ("backend", None, "backend is None (NoneType)"),
    ("device_id", -1, "device_id is -1 (int); expected an int >= 0"),
    ("device_id", "0", "device_id is '0' (str)"),
    ("device_id", True, "device_id is True (bool)"),
    ("threads", 2.5, "threads is 2.5 (float)"),
    ("threads", -1, "threads is -1 (int)"),
    ("resident", "yes", "resident is 'yes' (str); expected True, False or None"),
    ("cuda_graphs", None, "cuda_graphs is None (NoneType); expected True or False"),
    ("cuda_graphs", 1, "cuda_graphs is 1 (int)"),
])
def test_load_refuses_bad_options_by_name(folders, option, value, message):
    with pytest.raises(InputError) as info:
        genrt.runtime.load(folders["vqgan"], **{"backend": "onnxruntime-cpu", option: value})
    assert message in str(info.value) and "(fix: " in str(info.value), str(info.value)


def test_load_takes_numpy_flags_and_ints(folders):
    with genrt.runtime.load(folders["vqgan"], backend="onnxruntime-cpu", device_id=np.int64(0), threads=np.int32(1),
                            resident=np.bool_(True), cuda_graphs=np.bool_(False)) as pipe:
        assert pipe.resident is True and pipe.runners.threads == 1 and pipe.runners.cuda_graphs is False
