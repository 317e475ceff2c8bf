"""The torch reference of Imagen cascade sampling: base 64x64 -> SR 256 -> SR 1024.

Every random number is an explicit input (:class:`StageNoise`, drawn by :func:`draw_noise` or by the
caller), so another implementation (the numpy/TensorRT runtime) fed the same noise must produce the
same images. Per stage, for the DDPM sampler of ``genrt.sdk.diffusion``:

1. x_T = initial noise (B, 3, H, W).
2. SR stages only: the previous image is upsampled to H, W (bilinear, aligned corners) and noised at the
   fixed augmentation level ``sr_noise_level`` with the stage's augmentation noise; the U-Net is told
   that level.
3. For each timestep t (descending): the U-Net on [uncond; cond] (batch 2B), classifier-free guidance
   on the first 3 output channels (the learned-variance channels, if any, come from the conditional
   half), then the DDPM step with dynamic thresholding of x_0 and that step's noise.
4. The stage's image is clamped to [-1, 1].

The unconditional prompt is the empty one: zero embeddings with an all-zero mask (as in training,
``genrt.sdk.imagen.training``), unless the caller passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from genrt.errors import ConfigError, InputError
from genrt.sampling import DDPMSampler, NoiseSchedule, ScheduleConfig, classifier_free_guidance
from genrt.sdk.imagen.augment import augment_low_res, upsample_low_res
from genrt.sdk.imagen.config import CascadeConfig, cascade_config, imagen_unet_config
from genrt.sdk.imagen.unet import ImagenUNet

IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class StageNoise:
    """The random inputs of one stage."""

    initial: torch.Tensor  # (B, 3, H, W): x_T
    steps: torch.Tensor  # (S, B, 3, H, W): one per sampler step, in order (DDPM ignores the one at t = 0)
    augmentation: torch.Tensor | None = None  # (B, 3, H, W): noise of the low-res augmentation (SR stages)


def draw_noise(config: CascadeConfig, batch: int, num_inference_steps: Sequence[int], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> list[StageNoise]:
    """Standard normal noise for every stage, drawn from ``generator`` stage by stage in this order:
    initial, then one tensor per step (as ``genrt.sdk.diffusion.sample`` draws them), then (SR) augmentation.
    """
    if len(num_inference_steps) != len(config.resolutions):
        raise InputError(f"{len(num_inference_steps)} step counts for {len(config.resolutions)} stages",
                         fix="give one step count per stage, base first")
    noises = []
    for stage, (size, steps) in enumerate(zip(config.resolutions, num_inference_steps)):
        shape = (batch, IMAGE_CHANNELS, size, size)

        def draw():
            return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(dtype)

        initial = draw()
        step_noise = torch.stack([draw() for _ in range(steps)])
        noises.append(StageNoise(initial, step_noise, draw() if stage > 0 else None))
    return noises


class Cascade(nn.Module):
    """Text embeddings -> one image per stage: [(B, 3, 64, 64), (B, 3, 256, 256), (B, 3, 1024, 1024)] in [-1, 1]."""

    def __init__(self, config: CascadeConfig, base: ImagenUNet, super_resolution: Sequence[ImagenUNet]):
        super().__init__()
        if len(super_resolution) != len(config.super_resolution):
            raise ConfigError(f"{len(super_resolution)} SR U-Nets for a cascade of {len(config.super_resolution)}",
                              fix="pass one U-Net per entry of config.super_resolution")
        if base.config.low_res_cond or not all(m.config.low_res_cond for m in super_resolution):
            raise ConfigError("the base U-Net must be text-to-image and every later stage super-resolution",
                              fix="check the order of the U-Nets")
        self.config = config
        self.unets = nn.ModuleList([base, *super_resolution])
        self.schedule = NoiseSchedule(ScheduleConfig(beta_schedule=config.beta_schedule))  # augmentation

    @classmethod
    def from_registry(cls, name: str) -> "Cascade":
        """A registered cascade with freshly initialised U-Nets (for tests and shape checks)."""
        config = cascade_config(name)
        return cls(config, ImagenUNet(imagen_unet_config(config.base)),
                   [ImagenUNet(imagen_unet_config(n)) for n in config.super_resolution])

    def stage_schedule(self, stage: int) -> ScheduleConfig:
        """The sampler schedule of a stage: learned-range variance when its U-Net has 6 output channels."""
        learned = self.unets[stage].config.out_channels == 2 * IMAGE_CHANNELS
        return ScheduleConfig(beta_schedule=self.config.beta_schedule,
                              variance_type="learned_range" if learned else "fixed_small")

    def sample_stage(
        self, stage: int, text: torch.Tensor, mask: torch.Tensor, noise: StageNoise,
        low_res: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One stage. text: (2B, T, D) as [uncond; cond], mask (2B, T); low_res: previous image (B, 3, h, w)."""
        c = self.config
        unet = self.unets[stage]
        x = noise.initial
        batch = x.shape[0]
        extra = {}
        if stage > 0:  # 2. upsample and augment the previous stage's image at the fixed level
            level = torch.full((batch,), c.sr_noise_level, dtype=torch.int64, device=x.device)
            augmented = augment_low_res(upsample_low_res(low_res, x.shape[-1]), level, noise.augmentation,
                                        self.schedule)
            extra = {"low_res": torch.cat([augmented, augmented]), "noise_level": torch.cat([level, level])}
        sampler = DDPMSampler(self.stage_schedule(stage), dynamic_threshold_percentile=c.threshold_percentile)
        timesteps = sampler.set_timesteps(noise.steps.shape[0])
        x = x * sampler.init_noise_sigma  # 1. x_T
        for t, step_noise in zip(timesteps, noise.steps):  # 3. guided DDPM steps
            model_input = sampler.scale_model_input(x, t)
            t_batch = torch.full((2 * batch,), float(t), dtype=torch.float32, device=x.device)
            output = unet(torch.cat([model_input, model_input]), t_batch, text, mask, **extra)
            uncond, cond = output[:batch], output[batch:]
            guided = classifier_free_guidance(uncond[:, :IMAGE_CHANNELS], cond[:, :IMAGE_CHANNELS],
                                              c.guidance_scales[stage])
            x = sampler.step(torch.cat([guided, cond[:, IMAGE_CHANNELS:]], dim=1), t, x, step_noise)
        return x.clamp(-1.0, 1.0)  # 4.

    def _check_noise(self, noise: Sequence[StageNoise], batch: int) -> None:
        if len(noise) != len(self.unets):
            raise InputError(f"noise for {len(noise)} stages, the cascade has {len(self.unets)}",
                             fix="draw it with genrt.sdk.imagen.cascade.draw_noise")
        for stage, (stage_noise, size) in enumerate(zip(noise, self.config.resolutions)):
            shape = (batch, IMAGE_CHANNELS, size, size)
            ok = (stage_noise.initial.shape == shape and stage_noise.steps.shape[1:] == shape
                  and stage_noise.steps.shape[0] >= 1
                  and (stage == 0 or (stage_noise.augmentation is not None and stage_noise.augmentation.shape == shape)))
            if not ok:
                raise InputError(f"noise of stage {stage} does not fit {shape}",
                                 fix="initial and augmentation (B, 3, H, W), steps (S, B, 3, H, W), S >= 1")

    @torch.no_grad()
    def forward(
        self,
        text_embeddings: torch.Tensor,
        text_mask: torch.Tensor,
        noise: Sequence[StageNoise],
        uncond_embeddings: torch.Tensor | None = None,
        uncond_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """text_embeddings (B, T, D), text_mask (B, T); uncond_* default to the empty prompt -> images per stage."""
        batch = text_embeddings.shape[0]
        self._check_noise(noise, batch)
        if uncond_embeddings is None:
            uncond_embeddings = torch.zeros_like(text_embeddings)
            uncond_mask = torch.zeros_like(text_mask)
        if uncond_embeddings.shape != text_embeddings.shape or uncond_mask.shape != text_mask.shape:
            raise InputError("unconditional embeddings/mask differ in shape from the prompt's",
                             fix="encode the empty prompt with the same batch and max_length")
        text = torch.cat([uncond_embeddings, text_embeddings])  # (2B, T, D)
        mask = torch.cat([uncond_mask, text_mask])
        images = []
        for stage in range(len(self.unets)):
            images.append(self.sample_stage(stage, text, mask, noise[stage], images[-1] if images else None))
        return images
