"""The tiny latent-diffusion family: text encoder, U-Net and VAE stand-ins, their export folder and the torch loop.

``ToySampler`` follows the sampler protocol with plain arithmetic, so it steps numpy arrays (runtime) and torch
tensors (reference) identically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrt.settings import LdmSettings, TokenizerSettings
from tests.runtime.tiny.common import TEXT_DIM, TEXT_LENGTH, VOCAB, seeded
from tests.runtime.tiny.exports import export_component, write_manifest, write_tokenizer

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1,
             "variance_type": "fixed_small"}


class ToySampler:
    """A stochastic sampler of the contracts.md protocol (plus ``add_noise`` for img2img) written in operators
    only: the same code steps numpy arrays and torch tensors."""

    init_noise_sigma = 1.5
    needs_noise = True

    def __init__(self, config: dict):
        self.config = config
        self.timesteps: list[int] = []

    def set_timesteps(self, num_steps: int) -> np.ndarray:
        self.timesteps = [int(t) for t in np.linspace(900, 0, num_steps).round()]
        return np.array(self.timesteps)

    def scale_model_input(self, x, t):
        return x * (1.0 / (1.0 + t / 1000.0))

    def step(self, model_output, t, x, noise=None):
        return 0.9 * x - 0.1 * model_output + 0.05 * noise

    def add_noise(self, x0, noise, t):
        keep = 1.0 - t / 1000.0
        return keep * x0 + (1.0 - keep) * noise


class TinyTextEncoder(nn.Module):
    """input_ids (B, T) int32 -> text_embeddings (B, T, D)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, TEXT_DIM)
        self.mix = nn.Linear(TEXT_DIM, TEXT_DIM)

    def forward(self, input_ids):
        x = self.embed(input_ids.long())
        return x + torch.tanh(self.mix(x))


class TinyUNet(nn.Module):
    """sample (B, 4, h, w), timestep (B,), encoder_hidden_states (B, T, D) -> (B, 4, h, w)."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.text = nn.Linear(TEXT_DIM, channels)

    def forward(self, sample, timestep, encoder_hidden_states):
        text = self.text(encoder_hidden_states.mean(dim=1))[:, :, None, None]  # (B, C, 1, 1)
        return self.conv(sample) + text + 0.1 * torch.sin(timestep / 100.0)[:, None, None, None]


class TinyVAEDecoder(nn.Module):
    """latent (B, 4, h, w) -> image (B, 3, 8h, 8w) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, latent):
        return torch.tanh(nn.functional.interpolate(self.conv(latent), scale_factor=8, mode="nearest"))


class TinyVAEEncoder(nn.Module):
    """image (B, 3, H, W) -> latent_moments (B, 8, H/8, W/8)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, image):
        return self.conv(nn.functional.avg_pool2d(image, 8))


def ldm_modules() -> dict[str, nn.Module]:
    return {"text_encoder": seeded(TinyTextEncoder(), 1), "unet": seeded(TinyUNet(), 2),
            "vae_decoder": seeded(TinyVAEDecoder(), 3), "vae_encoder": seeded(TinyVAEEncoder(), 4)}


def build_ldm(root: Path, guidance_scale: float = 5.0) -> Path:
    """A tiny ldm export folder: 64x64 images by default (8x8 latents), sizes 32..128, batch 1..8."""
    modules = ldm_modules()
    ids = np.zeros((2, TEXT_LENGTH), np.int32)
    latent = np.zeros((2, 4, 8, 8), np.float32)
    latent_range = {"min": [1, 4, 4, 4], "opt": [2, 4, 8, 8], "max": [8, 4, 16, 16]}
    components = {
        "text_encoder": export_component(
            root, "text_encoder", modules["text_encoder"], [("input_ids", ids, ("B", TEXT_LENGTH))],
            [("text_embeddings", "float32", ("B", TEXT_LENGTH, TEXT_DIM))],
            {"input_ids": {"min": [1, TEXT_LENGTH], "opt": [2, TEXT_LENGTH], "max": [8, TEXT_LENGTH]}}),
        "unet": export_component(
            root, "unet", modules["unet"],
            [("sample", latent, ("B", 4, "h", "w")), ("timestep", np.zeros(2, np.float32), ("B",)),
             ("encoder_hidden_states", np.zeros((2, TEXT_LENGTH, TEXT_DIM), np.float32), ("B", TEXT_LENGTH, TEXT_DIM))],
            [("model_output", "float32", ("B", 4, "h", "w"))],
            {"sample": latent_range, "timestep": {"min": [1], "opt": [2], "max": [8]},
             "encoder_hidden_states": {"min": [1, TEXT_LENGTH, TEXT_DIM], "opt": [2, TEXT_LENGTH, TEXT_DIM],
                                       "max": [8, TEXT_LENGTH, TEXT_DIM]}}),
        "vae_decoder": export_component(
            root, "vae_decoder", modules["vae_decoder"], [("latent", latent, ("B", 4, "h", "w"))],
            [("image", "float32", ("B", 3, "8*h", "8*w"))], {"latent": latent_range}),
        "vae_encoder": export_component(
            root, "vae_encoder", modules["vae_encoder"], [("image", np.zeros((2, 3, 64, 64), np.float32),
                                                           ("B", 3, "H", "W"))],
            [("latent_moments", "float32", ("B", 8, "H/8", "W/8"))],
            {"image": {"min": [1, 3, 32, 32], "opt": [2, 3, 64, 64], "max": [8, 3, 128, 128]}}),
    }
    write_tokenizer(root / "tokenizer", "clip")
    settings = LdmSettings(scheduler=SCHEDULER, latent_scaling_factor=0.18215, guidance_scale=guidance_scale,
                           image_size=64, latent_channels=4, vae_factor=8, max_length=TEXT_LENGTH,
                           tokenizer=TokenizerSettings(folder="tokenizer/", kind="folder"), sampler="ddim", num_steps=4)
    return write_manifest(root, "ldm", components, settings)


@torch.no_grad()
def reference_ldm(modules: dict, tokens: np.ndarray, guidance: float, shape: tuple, num_steps: int, seed: int,
                  image: np.ndarray | None = None, strength: float = 1.0, scaling: float = 0.18215) -> np.ndarray:
    """The ldm pipeline's math in torch on ``modules``: tokens (2B or B, T) -> images (B, 3, H, W) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    sampler = ToySampler({})
    embeddings = modules["text_encoder"](torch.from_numpy(tokens))
    batch = shape[0]
    if image is None:
        timesteps = sampler.set_timesteps(num_steps)
        latents = torch.randn(shape, generator=generator) * sampler.init_noise_sigma
    else:
        pixels = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        moments = modules["vae_encoder"](pixels)
        mean, logvar = moments[:, :4], moments[:, 4:].clamp(-30.0, 20.0)
        clean = (mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)) * scaling
        timesteps = sampler.set_timesteps(num_steps)[num_steps - int(num_steps * strength):]
        latents = sampler.add_noise(clean, torch.randn(clean.shape, generator=generator), int(timesteps[0]))
    for t in timesteps:
        t = int(t)
        x = sampler.scale_model_input(latents, t)
        cfg = guidance != 1.0
        x = torch.cat([x, x]) if cfg else x
        out = modules["unet"](x, torch.full((x.shape[0],), float(t)), embeddings)
        if cfg:
            out = out[:batch] + guidance * (out[batch:] - out[:batch])
        latents = sampler.step(out, t, latents, torch.randn(latents.shape, generator=generator))
    return modules["vae_decoder"](latents / scaling).numpy()
