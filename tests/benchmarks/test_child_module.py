"""benchmarks/child_module: a network converted and run in a child process gives what it gives in this one."""

import functools

import numpy as np
import pytest
import torch

from benchmarks.child_module import ChildModule
from benchmarks.cpu_sd15_unet import _plan, _unet
from benchmarks.torch_timing import cast_inputs


def test_child_bf16_unet_equals_the_same_unet_converted_here():
    inputs = _plan("tiny", 32, 2).components["unet"].sample_inputs("opt", seed=0)
    torch.set_num_threads(1)
    with torch.inference_mode():
        here = _unet("tiny", 32, 2).eval().to(torch.bfloat16)(**cast_inputs(inputs, torch.bfloat16)).float().numpy()
    with ChildModule(functools.partial(_unet, "tiny", 32, 2), torch.bfloat16,
                     {name: tensor.numpy() for name, tensor in inputs.items()}) as child:
        child.set_threads(1)
        first, second = child(), child()
        assert child.peak_mb() >= child.ready_peak_mb > 0
    assert first.dtype == np.float32 and first.shape == here.shape
    np.testing.assert_array_equal(first, here)  # same seeded weights, same bf16 kernels, one thread each
    np.testing.assert_array_equal(second, first)


def test_a_child_that_fails_to_build_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="exit code"):
        ChildModule(functools.partial(_unet, "no-such-config", 32, 2), torch.bfloat16, {})
