"""Dynamic thresholding against hand-computed values (torch and numpy), classifier-free guidance, and the
reference sampling loop's order of random draws."""

import numpy as np
import pytest
import torch

from genrt.errors import InputError
from genrt.sampling import (DEEPFLOYD_IF_SCHEDULE, SD1_SCHEDULE, classifier_free_guidance, dynamic_threshold,
                            make_sampler)
from genrt.sampling.guidance import batch_quantile
from genrt.sdk.diffusion.sample import sample
from tests.conftest import relative_error

# Sample 0: |x| sorted = [0.25, 0.5, 1, 2, 3, 4, 6, 8]. The 0.75-quantile sits at position 0.75 * 7 = 5.25:
# 4 + 0.25 * (6 - 4) = 4.5. Sample 1 stays within (-1, 1), so its threshold is max(q, 1) = 1: unchanged.
X0 = [
    [0.5, -1.0, 2.0, -3.0, 4.0, -6.0, 0.25, 8.0],
    [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.9],
]
BY_HAND = {
    (0.75, None): [[v / 4.5 for v in (0.5, -1.0, 2.0, -3.0, 4.0, -4.5, 0.25, 4.5)], X0[1]],
    (0.75, 1.5): [[v / 1.5 for v in (0.5, -1.0, 1.5, -1.5, 1.5, -1.5, 0.25, 1.5)], X0[1]],
    (1.0, None): [[v / 8.0 for v in X0[0]], X0[1]],
}


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("percentile, max_value", list(BY_HAND))
def test_dynamic_threshold_by_hand(backend, percentile, max_value):
    expected = np.array(BY_HAND[percentile, max_value], dtype=np.float64).reshape(2, 1, 2, 4)
    x0 = np.array(X0, dtype=np.float64).reshape(2, 1, 2, 4)  # (B, C, H, W)
    if backend == "torch":
        result = dynamic_threshold(torch.from_numpy(x0), percentile, max_value)
        assert result.dtype == torch.float64
    else:
        result = dynamic_threshold(x0, percentile, max_value)
        assert isinstance(result, np.ndarray) and result.dtype == np.float64
    assert relative_error(result, expected) < 1e-15


def test_batch_quantile_matches_torch_quantile_and_half_inputs_work():
    values = torch.randn(3, 1001, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.5, 0.995, 1.0):
        assert relative_error(batch_quantile(values, q), torch.quantile(values, q, dim=1)) < 1e-7
    x0 = (3 * values).reshape(3, 7, 11, 13).half()
    result = dynamic_threshold(x0, 0.995)
    assert result.dtype == torch.float16
    assert relative_error(result, dynamic_threshold(x0.float(), 0.995)) < 1e-3
    with pytest.raises(InputError, match="percentile is 99.5"):
        dynamic_threshold(x0, 99.5)
    with pytest.raises(InputError, match="max_value is 0.5"):
        dynamic_threshold(x0, 0.9, 0.5)


def test_classifier_free_guidance():
    uncond, cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    assert classifier_free_guidance(uncond, cond, 7.5).tolist() == [16.0, 13.0]
    assert torch.equal(classifier_free_guidance(uncond, cond, 1.0), cond)
    with pytest.raises(InputError, match="differ in shape"):
        classifier_free_guidance(uncond, cond[:1], 2.0)


def paired_model(channels_out: int):
    """(B', C, H, W), (B',) -> (B', channels_out, H, W); rows of the second half act "conditioned"."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.float32 and t.shape == (x.shape[0],)
        conditioned = (torch.arange(x.shape[0]) >= x.shape[0] // 2).to(x.dtype).reshape(-1, 1, 1, 1)
        eps = 0.5 * torch.tanh(x) + 0.2 * conditioned * torch.cos(t / 300).reshape(-1, 1, 1, 1)
        extra = [torch.tanh(eps)] if channels_out > x.shape[1] else []
        return torch.cat([eps, *extra], dim=1)

    return model_fn


@pytest.mark.parametrize("name, config", [("euler_ancestral", SD1_SCHEDULE), ("ddpm", DEEPFLOYD_IF_SCHEDULE)])
def test_sample_loop_follows_the_documented_draw_order(name, config):
    shape, scale, steps = (2, 3, 4, 4), 4.0, 5
    channels_out = 6 if config.variance_type == "learned_range" else 3
    model_fn = paired_model(channels_out)
    result = sample(model_fn, make_sampler(name, config), shape, steps, torch.Generator().manual_seed(7), scale)
    assert result.shape == shape and result.dtype == torch.float32

    # the same by hand: initial noise first, then one draw per step after the model call
    generator, sampler = torch.Generator().manual_seed(7), make_sampler(name, config)
    timesteps = sampler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator) * sampler.init_noise_sigma
    for t in timesteps:
        model_input = sampler.scale_model_input(x, t)
        output = model_fn(torch.cat([model_input, model_input]), torch.full((4,), float(t)))
        uncond, cond = output[:2], output[2:]
        guided = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
        x = sampler.step(torch.cat([guided, cond[:, 3:]], dim=1), t, x, torch.randn(shape, generator=generator))
    assert torch.equal(result, x)


def test_sample_loop_without_guidance_and_bad_shapes():
    model_fn = paired_model(3)
    result = sample(model_fn, make_sampler("dpmpp_2m", SD1_SCHEDULE), (1, 3, 4, 4), 4, torch.Generator().manual_seed(0))
    generator, sampler = torch.Generator().manual_seed(0), make_sampler("dpmpp_2m", SD1_SCHEDULE)
    timesteps = sampler.set_timesteps(4)
    x = torch.randn((1, 3, 4, 4), generator=generator)
    for t in timesteps:  # deterministic sampler: no draws after the initial noise
        x = sampler.step(model_fn(x, torch.full((1,), float(t))), t, x)
    assert torch.equal(result, x)
    with pytest.raises(InputError, match="sample shape"):
        sample(model_fn, sampler, (4,), 4, torch.Generator())
