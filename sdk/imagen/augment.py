"""Conditioning of the super-resolution stages on the low-res image (Saharia et al. 2022, sec. 2.5).

The low-res image is upsampled to the stage's size and corrupted by the forward diffusion process at
an augmentation level ``level`` (noise conditioning augmentation): random per sample in training,
fixed at inference. The SR U-Net is told the level, embedded like a timestep.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sampling import NoiseSchedule


def upsample_low_res(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, size, size): bilinear with aligned corners (as DeepFloyd IF's stage II).

    Simple to mirror in numpy: output pixel i samples input position i * (h - 1) / (size - 1).
    """
    if image.ndim != 4 or size < max(image.shape[-2:]):
        raise InputError(f"cannot upsample {tuple(image.shape)} to {size}x{size}",
                         fix="pass a (B, C, h, w) image no larger than the target size")
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=True)


def augment_low_res(low_res: torch.Tensor, level, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Noise conditioning augmentation: x_aug = sqrt(abar_level) low_res + sqrt(1 - abar_level) noise.

    low_res, noise: (B, C, H, W) (already upsampled); level: int or integer (B,) in 0..T-1
    (0 is almost clean) -> (B, C, H, W).
    """
    if noise.shape != low_res.shape:
        raise InputError(f"augmentation noise {tuple(noise.shape)} for a low-res image {tuple(low_res.shape)}",
                         fix="draw the noise with the upsampled low-res image's shape")
    return schedule.add_noise(low_res, noise, level)


def random_augmentation_levels(batch: int, max_level: int, generator: torch.Generator) -> torch.Tensor:
    """Training: one level per sample, uniform in 0..max_level-1: (B,) int64."""
    if max_level < 1:
        raise InputError(f"max augmentation level is {max_level}", fix="pass a positive level, e.g. 1000")
    return torch.randint(0, max_level, (batch,), generator=generator, device=generator.device)
