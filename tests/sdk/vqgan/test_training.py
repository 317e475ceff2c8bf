"""VQGANTrainer: alternating steps lower the loss on a fixed batch; discriminator gating; resume."""

import io
from dataclasses import replace

import pytest
import torch

from genrt.errors import InputError
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.config import VQGANLossConfig, VQGANTrainingConfig, vqgan_config
from genrt.sdk.vqgan.training import VQGANTrainer


def _batch():
    torch.manual_seed(1)
    ramp = torch.linspace(-1, 1, 16)
    smooth = torch.stack([ramp[None, :].expand(16, 16), ramp[:, None].expand(16, 16), ramp.outer(ramp)])
    return torch.stack([smooth, -smooth]) + 0.05 * torch.randn(2, 3, 16, 16)  # (2, 3, 16, 16)


def _trainer(ema: bool = False, disc_start: int = 0) -> VQGANTrainer:
    torch.manual_seed(0)
    model = VQModel(replace(vqgan_config("tiny"), ema=ema))
    loss = VQGANLossConfig(disc_start=disc_start, disc_ndf=16, disc_num_layers=2)
    return VQGANTrainer(model, VQGANTrainingConfig(learning_rate=1e-4, loss=loss))


@pytest.mark.parametrize("ema", [False, True])
def test_training_steps_lower_the_loss(ema):
    trainer = _trainer(ema=ema)
    batch = _batch()
    history = [trainer.training_step(batch, step) for step in range(20)]
    first, last = history[0], history[-1]
    assert {"rec_loss", "codebook_loss", "g_loss", "d_weight", "disc_loss", "total_loss"} <= set(first)
    print(f"ema={ema}: rec {first['rec_loss']:.3f} -> {last['rec_loss']:.3f}, "
          f"total {first['total_loss']:.3f} -> {last['total_loss']:.3f}, disc {first['disc_loss']:.3f} -> "
          f"{last['disc_loss']:.3f}")
    vq_loss = [h["rec_loss"] + h["codebook_loss"] for h in history]  # the objective without the GAN term
    assert sum(vq_loss[-3:]) < 0.85 * sum(vq_loss[:3])
    assert last["total_loss"] < 0.85 * first["total_loss"]
    if ema:  # the codebook moved by EMA, not by Adam
        assert trainer.model.quantize.cluster_size.sum() > 0


def test_discriminator_waits_for_disc_start():
    trainer = _trainer(disc_start=5)
    disc_before = {k: v.clone() for k, v in trainer.loss.discriminator.state_dict().items()}
    logs = trainer.training_step(_batch(), step=4)
    assert "disc_loss" not in logs and "g_loss" not in logs
    for key, value in trainer.loss.discriminator.state_dict().items():
        assert torch.equal(value, disc_before[key]), key  # untouched: no forward, no step
    logs = trainer.training_step(_batch(), step=5)
    assert logs["disc_loss"] > 0 and logs["d_weight"] > 0
    assert not torch.equal(trainer.loss.discriminator.main[0].weight, disc_before["main.0.weight"])


def test_resume_reproduces_the_next_step():
    batch = _batch()
    trainer = _trainer()
    trainer.training_step(batch, 0)
    snapshot = io.BytesIO()
    torch.save(trainer.state_dict(), snapshot)  # serialised now: later steps cannot alter it
    expected = trainer.training_step(batch, 1)
    resumed = _trainer()
    snapshot.seek(0)
    resumed.load_state_dict(torch.load(snapshot, weights_only=False))
    assert resumed.training_step(batch, 1) == pytest.approx(expected, rel=1e-5)


def test_bad_batch():
    with pytest.raises(InputError, match="float images"):
        _trainer().training_step(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), 0)
