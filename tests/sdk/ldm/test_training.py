"""Training: the loss targets, conditioning dropout, EMA, and losses going down on a fixed tiny batch."""

import pytest
import torch

from genrt.errors import InputError
from genrt.sampling import NoiseSchedule
from genrt.sdk.ldm.config import get_config
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.training import EMA, autoencoder_loss, diffusion_loss, encode_latents, training_step
from tests.conftest import relative_error


class Recorder(torch.nn.Module):
    """A stand-in U-Net that records its inputs and returns a fixed prediction."""

    def __init__(self, prediction):
        super().__init__()
        self.prediction = prediction

    def forward(self, sample, timestep, context):
        self.seen = (sample, timestep, context)
        return self.prediction


@pytest.mark.parametrize("name", ["tiny", "tiny-sd2"])
def test_diffusion_loss_target_and_dropout(name):
    config = get_config(name)
    schedule = NoiseSchedule(config.schedule_config())
    latents = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    context, empty = torch.randn(3, 77, 32, dtype=torch.float64), torch.randn(1, 77, 32, dtype=torch.float64)
    prediction = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    unet = Recorder(prediction)

    loss = diffusion_loss(unet, schedule, latents, context, empty, torch.Generator().manual_seed(0), cond_dropout=1.0)
    # Redraw the same random numbers in the documented order: timesteps, noise, dropout flips.
    generator = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (3,), generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float32).double()
    abar = torch.from_numpy(schedule.alphas_cumprod)[t][:, None, None, None]
    target = noise if name == "tiny" else abar.sqrt() * noise - (1 - abar).sqrt() * latents
    expected = ((prediction - target) ** 2).mean()
    assert relative_error(loss, expected) < 1e-6
    sample, timestep, seen_context = unet.seen
    assert relative_error(sample, abar.sqrt() * latents + (1 - abar).sqrt() * noise) < 1e-12
    assert torch.equal(timestep, t.double())
    assert torch.equal(seen_context, empty.expand(3, -1, -1))  # p = 1: every prompt dropped

    diffusion_loss(unet, schedule, latents, context, empty, torch.Generator().manual_seed(0), cond_dropout=0.0)
    assert torch.equal(unet.seen[2], context)
    with pytest.raises(InputError, match="cond_dropout"):
        diffusion_loss(unet, schedule, latents, context, empty, torch.Generator(), cond_dropout=1.5)
    with pytest.raises(InputError, match="empty_context"):
        diffusion_loss(unet, schedule, latents, context, context, torch.Generator())


def test_ema_follows_the_warm_up_formula():
    layer = torch.nn.Linear(2, 2)
    start = layer.weight.detach().clone()
    ema = EMA(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(layer)  # decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], start + 0.9)
    ema.update(layer)  # decay min(0.5, 2/11)
    assert torch.allclose(ema.shadow["weight"], start + 0.9 + (1 - 2 / 11) * 0.1)
    ema.copy_to(layer)
    assert torch.equal(layer.weight, ema.shadow["weight"])
    with pytest.raises(InputError, match="decay"):
        EMA(layer, decay=1.0)


@pytest.mark.parametrize("name", ["tiny", "tiny-sd2"])
def test_training_reduces_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = LatentDiffusion(get_config(name))
    schedule = NoiseSchedule(model.config.schedule_config())
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    ids, empty_ids = torch.randint(3, 1000, (2, 77)), torch.full((1, 77), 2)
    optimizer = torch.optim.Adam(model.unet.parameters(), lr=2e-3)
    ema = EMA(model.unet, decay=0.9)
    frozen = {k: v.clone() for k, v in model.vae.state_dict().items()}

    def evaluation_loss():  # the same 8 timesteps and noises per image every time
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            latents = encode_latents(model, images, generator).repeat(8, 1, 1, 1)
            context, empty = model.text_encoder(ids).repeat(8, 1, 1), model.text_encoder(empty_ids)
            return float(diffusion_loss(model.unet, schedule, latents, context, empty, generator, 0.0))

    before = evaluation_loss()
    generator = torch.Generator().manual_seed(1)
    losses = [training_step(model, optimizer, images, ids, empty_ids, generator, schedule=schedule, ema=ema)
              for _ in range(20)]
    after = evaluation_loss()
    # measured: tiny 1.10 -> 0.22, tiny-sd2 (v-prediction) 0.48 -> 0.23
    assert after < 0.6 * before, (before, after, losses)
    assert all(torch.equal(v, frozen[k]) for k, v in model.vae.state_dict().items())
    assert ema.num_updates == 20
    assert not torch.equal(ema.shadow["conv_out.weight"], model.unet.conv_out.weight)


def test_autoencoder_loss_decreases_and_matches_its_terms():
    torch.manual_seed(0)
    vae = LatentDiffusion(get_config("tiny")).vae
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    noise = torch.randn(2, 4, 8, 8)
    loss = autoencoder_loss(vae, images, noise, kl_weight=0.5)
    reconstruction, posterior = vae(images, noise)
    assert relative_error(loss.reconstruction, (images - reconstruction).abs().sum() / 2) < 1e-6
    assert relative_error(loss.total, loss.reconstruction + 0.5 * posterior.kl().mean()) < 1e-6

    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    first = float(autoencoder_loss(vae, images, noise).total.detach())
    for _ in range(20):
        optimizer.zero_grad()
        autoencoder_loss(vae, images, noise).total.backward()
        optimizer.step()
    assert float(autoencoder_loss(vae, images, noise).total.detach()) < 0.5 * first
