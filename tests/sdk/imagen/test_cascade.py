"""Cascade reference: 64 -> 256 -> 1024 shapes, agreement with the shared sampling loop, determinism, masks."""

import dataclasses

import pytest
import torch

from genrt.errors import InputError
from genrt.sampling import DDPMSampler, dynamic_threshold
from genrt.sdk.diffusion.sample import sample
from genrt.sdk.imagen.cascade import Cascade, draw_noise
from genrt.sdk.imagen.config import cascade_config
from tests.conftest import relative_error


@pytest.fixture(scope="module")
def cascade():
    torch.manual_seed(0)
    return Cascade.from_registry("tiny").eval()


@pytest.fixture(scope="module")
def small(cascade):
    """The same U-Nets run at 16 -> 32 -> 64 (they accept any multiple of their stride): fast checks."""
    config = dataclasses.replace(cascade.config, resolutions=(16, 32, 64))
    return Cascade(config, cascade.unets[0], list(cascade.unets[1:])).eval()


def _prompt(batch: int = 1, tokens: int = 6):
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(batch, tokens, dtype=torch.int32)
    mask[:, :4] = 1
    return torch.randn(batch, tokens, 32, generator=g) * mask[..., None], mask


def test_tiny_paper_cascade_shapes(cascade):
    text, mask = _prompt()
    noise = draw_noise(cascade.config, 1, (2, 2, 2), torch.Generator().manual_seed(0))
    images = cascade(text, mask, noise)
    assert [tuple(i.shape) for i in images] == [(1, 3, 64, 64), (1, 3, 256, 256), (1, 3, 1024, 1024)]
    assert all(i.dtype == torch.float32 and i.abs().max() <= 1.0 and torch.isfinite(i).all() for i in images)


def test_base_stage_equals_the_shared_sampling_loop(small):
    """Stage 0 with draw_noise's draws is genrt.sdk.diffusion.sample with the same generator seed."""
    text, mask = _prompt(batch=2)
    noise = draw_noise(small.config, 2, (3, 1, 1), torch.Generator().manual_seed(4))
    uncond = torch.zeros_like(text), torch.zeros_like(mask)
    ours = small.sample_stage(0, torch.cat([uncond[0], text]), torch.cat([uncond[1], mask]), noise[0])

    unet = small.unets[0]

    def model_fn(x, t):
        return unet(x, t, torch.cat([uncond[0], text]), torch.cat([uncond[1], mask]))

    sampler = DDPMSampler(small.stage_schedule(0), dynamic_threshold_percentile=0.995)
    with torch.no_grad():
        reference = sample(model_fn, sampler, (2, 3, 16, 16), 3, torch.Generator().manual_seed(4),
                           guidance_scale=small.config.guidance_scales[0]).clamp(-1, 1)
    assert relative_error(ours, reference) < 1e-6


def test_same_noise_same_images_and_padding_invariance(small):
    text, mask = _prompt(batch=2)
    noise = draw_noise(small.config, 2, (2, 2, 2), torch.Generator().manual_seed(5))
    first = small(text, mask, noise)
    again = small(text, mask, noise)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    padded_text = torch.cat([text, 40.0 * torch.randn(2, 5, 32)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=mask.dtype)], dim=1)
    padded = small(padded_text, padded_mask, noise)
    assert all(relative_error(p, f) < 1e-5 for p, f in zip(padded, first))
    other = small(text, mask, draw_noise(small.config, 2, (2, 2, 2), torch.Generator().manual_seed(6)))
    assert relative_error(other[-1], first[-1]) > 1e-2


def test_sr_noise_level_is_used(small):
    text, mask = _prompt()
    noise = draw_noise(small.config, 1, (1, 1, 1), torch.Generator().manual_seed(5))
    a = small(text, mask, noise)
    changed = Cascade(dataclasses.replace(small.config, sr_noise_level=900), small.unets[0], list(small.unets[1:]))
    b = changed(text, mask, noise)
    assert torch.equal(a[0], b[0]) and relative_error(b[1], a[1]) > 1e-3


def test_dynamic_thresholding_by_hand():
    """s = max(1, 99.5th percentile of |x0|) per sample; x0 clamped to [-s, s] and divided by s."""
    x0 = torch.zeros(2, 1, 10, 20)  # 200 values per sample
    x0[0].view(-1)[:] = torch.linspace(-4.0, 4.0, 200)
    x0[1].view(-1)[:] = torch.linspace(-0.5, 0.5, 200)  # inside [-1, 1]: s = 1, unchanged
    out = dynamic_threshold(x0, 0.995)
    magnitudes = torch.sort(x0[0].abs().flatten()).values
    position = 0.995 * 199  # linear interpolation between order statistics 198 and 199
    s = magnitudes[198] + (position - 198) * (magnitudes[199] - magnitudes[198])
    assert torch.allclose(out[0], x0[0].clamp(-s, s) / s, atol=1e-7)
    assert float(s) > 3.9 and torch.equal(out[1], x0[1])


def test_noise_and_config_checks(cascade):
    text, mask = _prompt()
    noise = draw_noise(cascade.config, 1, (1, 1, 1), torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="stage 1"):
        cascade(text, mask, [noise[0], dataclasses.replace(noise[1], augmentation=None), noise[2]])
    with pytest.raises(InputError, match="noise for 2 stages"):
        cascade(text, mask, noise[:2])
    with pytest.raises(InputError, match="step counts"):
        draw_noise(cascade.config, 1, (1, 1), torch.Generator())
    assert cascade_config("imagen").resolutions == (64, 256, 1024)
