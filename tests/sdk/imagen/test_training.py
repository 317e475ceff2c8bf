"""Training steps of the base and SR stages, the bound term, noise conditioning augmentation."""

import pytest
import torch

from genrt.errors import InputError
from genrt.sampling import NoiseSchedule, ScheduleConfig
from genrt.sdk.imagen.augment import augment_low_res, random_augmentation_levels, upsample_low_res
from genrt.sdk.imagen.config import imagen_unet_config
from genrt.sdk.imagen.training import TrainingConfig, _normal_kl, training_step, vlb_term
from genrt.sdk.imagen.unet import ImagenUNet
from tests.conftest import relative_error

SCHEDULE = NoiseSchedule(ScheduleConfig(beta_schedule="cosine", variance_type="learned_range"))


def _batch(size: int, generator: torch.Generator):
    images = torch.rand(2, 3, size, size, generator=generator) * 2 - 1
    text = torch.randn(2, 4, 32, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.int32)
    return images, text, mask


@pytest.mark.parametrize("name, size", [("tiny-base-64", 16), ("tiny-sr-256", 16)])
def test_loss_decreases_on_a_fixed_batch(name, size):
    torch.manual_seed(0)
    model = ImagenUNet(imagen_unet_config(name))
    images, text, mask = _batch(size, torch.Generator().manual_seed(1))
    low_res = images[..., ::4, ::4] if model.config.low_res_cond else None
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        # The same draws every step (fixed t, noise, drops, levels): only the weights change.
        step = training_step(model, images, text, mask, SCHEDULE, torch.Generator().manual_seed(7), low_res=low_res,
                             config=TrainingConfig(text_drop_prob=0.5))
        optimiser.zero_grad()
        step.loss.backward()
        optimiser.step()
        losses.append(step.loss.item())
    assert step.vlb.item() > 0 if model.config.out_channels == 6 else step.vlb.item() == 0
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_step_is_reproducible_and_checks_low_res():
    torch.manual_seed(0)
    model = ImagenUNet(imagen_unet_config("tiny-sr-256"))
    images, text, mask = _batch(16, torch.Generator().manual_seed(1))
    a = training_step(model, images, text, mask, SCHEDULE, torch.Generator().manual_seed(3), low_res=images[..., ::2, ::2])
    b = training_step(model, images, text, mask, SCHEDULE, torch.Generator().manual_seed(3), low_res=images[..., ::2, ::2])
    assert a.loss.item() == b.loss.item()
    with pytest.raises(InputError, match="low_res"):
        training_step(model, images, text, mask, SCHEDULE, torch.Generator())


def test_vlb_is_zero_for_the_true_posterior():
    """With the true epsilon and variance_value = -1 (posterior variance), L_t = KL(q || q) = 0 for t > 0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([1, 500, 999])
    x_t = SCHEDULE.add_noise(x0, noise, t)
    vlb = vlb_term(SCHEDULE, x0, x_t, t, noise, -torch.ones_like(x0))
    assert vlb.abs().max() < 1e-4
    # At t = 1 beta_t is far from the posterior variance: the wrong end of the range costs bits
    # (at large t the two nearly coincide, so the choice hardly matters there).
    wrong = vlb_term(SCHEDULE, x0, x_t, t, noise, torch.ones_like(x0))
    assert wrong[0] > 0.1 and wrong[1:].abs().max() < 1e-4


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    assert relative_error(_normal_kl(m1, lv1, m2, lv2), expected) < 1e-12


def test_noise_conditioning_augmentation_by_hand():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 8, 8, generator=g)
    noise = torch.randn(2, 3, 8, 8, generator=g)
    levels = torch.tensor([0, 700])
    abar = torch.from_numpy(SCHEDULE.alphas_cumprod)[levels].float().reshape(2, 1, 1, 1)
    expected = abar.sqrt() * low + (1 - abar).sqrt() * noise
    assert relative_error(augment_low_res(low, levels, noise, SCHEDULE), expected) < 1e-6
    fixed = augment_low_res(low, 250, noise, SCHEDULE)  # one level for the batch (inference)
    assert relative_error(fixed, augment_low_res(low, torch.tensor([250, 250]), noise, SCHEDULE)) == 0
    with pytest.raises(InputError, match="augmentation noise"):
        augment_low_res(low, 250, noise[:, :, :4], SCHEDULE)
    levels = random_augmentation_levels(1000, 250, torch.Generator().manual_seed(0))
    assert levels.dtype == torch.int64 and 0 <= levels.min() and levels.max() < 250 and len(levels.unique()) > 200


def test_upsample_aligned_corners_by_hand():
    image = torch.tensor([[[[0.0, 3.0], [6.0, 9.0]]]])
    up = upsample_low_res(image, 4)  # samples input positions 0, 1/3, 2/3, 1
    assert torch.allclose(up[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.allclose(up[0, 0, :, 0], torch.tensor([0.0, 2.0, 4.0, 6.0]))
    with pytest.raises(InputError, match="upsample"):
        upsample_low_res(image, 1)
