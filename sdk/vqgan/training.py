"""VQGAN training: alternate one autoencoder step and one discriminator step per batch (taming)."""

from __future__ import annotations

import torch

from genrt.errors import InputError
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.config import VQGANTrainingConfig
from genrt.sdk.vqgan.losses import VQGANLoss


class VQGANTrainer:
    """Owns the loss modules and the two Adam optimisers of a VQModel.

    ``training_step(batch, step)``:
      1. autoencoder: x^, L_VQ = model(x); minimise the generator loss (L_rec + lambda f L_G + L_VQ);
      2. discriminator (from ``disc_start`` on): minimise L_D on x and sg[x^].
    With an EMA codebook the codebook is updated inside the forward pass, not by the optimiser.
    """

    def __init__(self, model: VQModel, config: VQGANTrainingConfig = VQGANTrainingConfig()):
        self.model = model
        self.config = config
        device = model.last_layer().device
        self.loss = VQGANLoss(config.loss).to(device)
        adam = dict(lr=config.learning_rate, betas=config.adam_betas)
        self.autoencoder_optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], **adam)
        self.discriminator_optimizer = torch.optim.Adam(self.loss.discriminator.parameters(), **adam)

    def training_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        """batch (B, 3, H, W) in [-1, 1] at global step ``step`` -> the logged losses as floats."""
        if not batch.dtype.is_floating_point or batch.ndim != 4:
            raise InputError(f"training batch has shape {tuple(batch.shape)} and dtype {batch.dtype}",
                             fix="pass float images (B, 3, H, W) scaled to [-1, 1]")
        self.model.train()
        self.loss.train()

        reconstruction, codebook_loss = self.model(batch)
        loss, logs = self.loss.generator_loss(batch, reconstruction, codebook_loss, step, self.model.last_layer())
        self.autoencoder_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.autoencoder_optimizer.step()

        if self.loss.disc_factor(step) > 0:
            d_loss, d_logs = self.loss.discriminator_loss(batch, reconstruction, step)
            self.discriminator_optimizer.zero_grad(set_to_none=True)  # drops the L_G gradients of step 1
            d_loss.backward()
            self.discriminator_optimizer.step()
            logs.update(d_logs)
        return {name: float(value) for name, value in logs.items()}

    def state_dict(self) -> dict:
        """Everything needed to resume: model, discriminator and both optimiser states."""
        return {
            "model": self.model.state_dict(),
            "discriminator": self.loss.discriminator.state_dict(),
            "autoencoder_optimizer": self.autoencoder_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``."""
        self.model.load_state_dict(state["model"])
        self.loss.discriminator.load_state_dict(state["discriminator"])
        self.autoencoder_optimizer.load_state_dict(state["autoencoder_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
