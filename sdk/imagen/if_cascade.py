"""The torch reference of a DeepFloyd IF cascade read from its diffusers folders (stage I, optional stage II).

What ``genrt export imagen --checkpoint I --checkpoint-sr II`` and the runtime's ``ImagenPipeline`` compute,
in PyTorch, with the runtime's noise order so that the same ``numpy.random.Generator`` gives the same images:

1. The prompts and the negative prompts ("" by default) are T5-encoded (outputs at padding positions kept,
   as diffusers' IF pipelines do) into [uncond; cond] (2B, 77, D); the U-Nets get no text mask.
2. Per stage, with the stage's DDPM schedule and dynamic thresholding from ``scheduler/scheduler_config.json``:
   stage II first draws its augmentation noise and noises the upsampled stage I image at ``noise_level``;
   then x_T is drawn, and every step runs the U-Net on [x; x], guides the first 3 output channels
   (a learned variance comes from the conditional half; other variance types ignore the U-Net's variance
   channels, as diffusers' IF pipelines do), draws that step's noise and steps.
3. Each stage's image is clamped to [-1, 1].
Noise: ``rng.standard_normal(shape, dtype=float32)`` for each draw, in the order above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genrt.errors import InputError
from genrt.sampling import DDPMSampler, NoiseSchedule, ScheduleConfig, SchedulerConfig, classifier_free_guidance
from genrt.sdk.imagen.augment import augment_low_res, upsample_low_res
from genrt.sdk.imagen.checkpoint import load_if_unet
from genrt.sdk.imagen.if_unet import IFUNet
from genrt.sdk.imagen.text_encoder import T5TextEncoder, encode_prompts, load_tokenizer

IMAGE_CHANNELS = 3
MAX_LENGTH = 77  # T5 tokens per prompt of IF's pipelines


@dataclass(frozen=True)
class IFStageReference:
    """One stage: its U-Net, DDPM schedule and the thresholding of x_0."""

    unet: IFUNet
    schedule: ScheduleConfig
    threshold: tuple[float, float]  # (percentile, max) of dynamic thresholding; (1, 1) is plain clipping

    @classmethod
    def from_folder(cls, folder: str | Path) -> "IFStageReference":
        folder = Path(folder)
        path = folder / "scheduler" / "scheduler_config.json"
        data = json.loads(path.read_text())
        schedule = SchedulerConfig.from_dict(data, str(path)).resolve("ddpm").schedule
        threshold = ((float(data.get("dynamic_thresholding_ratio", 0.995)), float(data.get("sample_max_value", 1.0)))
                     if data.get("thresholding", False) else (1.0, 1.0))
        return cls(load_if_unet(folder / "unet"), schedule, threshold)

    def sampler(self) -> DDPMSampler:
        return DDPMSampler(self.schedule, dynamic_threshold_percentile=self.threshold[0],
                           dynamic_threshold_max=self.threshold[1])


class IFCascadeReference:
    """``reference(prompts, steps, guidance, rng) -> [stage I images (B, 3, r, r), stage II ...]`` in [-1, 1]."""

    def __init__(self, stage_one: str | Path, stage_two: str | Path | None = None):
        stage_one = Path(stage_one)
        self.tokenizer = load_tokenizer(stage_one / "tokenizer")
        self.encoder = T5TextEncoder.from_folder(stage_one / "text_encoder", max_length=MAX_LENGTH,
                                                 zero_padding=False)
        self.stages = [IFStageReference.from_folder(stage_one)]
        if stage_two is not None:
            self.stages.append(IFStageReference.from_folder(stage_two))

    def encode(self, prompts: Sequence[str], negative_prompts: Sequence[str] | None = None) -> torch.Tensor:
        """[uncond; cond] T5 embeddings (2B, 77, D) of lower-cased, stripped prompts (IF's preprocessing)."""
        negatives = [""] * len(prompts) if negative_prompts is None else list(negative_prompts)
        texts = [p.lower().strip() for p in list(negatives) + list(prompts)]
        return encode_prompts(self.tokenizer, self.encoder, texts, MAX_LENGTH)[0]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], num_inference_steps: Sequence[int], guidance_scale: Sequence[float],
                 rng: np.random.Generator, noise_level: int = 250) -> list[torch.Tensor]:
        if len(num_inference_steps) < len(self.stages) or len(guidance_scale) < len(self.stages):
            raise InputError(f"steps {num_inference_steps} and guidance {guidance_scale} for {len(self.stages)} stages",
                             fix="pass one step count and one guidance scale per stage, base first")
        text = self.encode(prompts)
        batch = len(prompts)

        def draw(shape) -> torch.Tensor:
            return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))

        images: list[torch.Tensor] = []
        for stage, steps, guidance in zip(self.stages, num_inference_steps, guidance_scale):
            size = stage.unet.config.sample_size
            shape = (batch, IMAGE_CHANNELS, size, size)
            extra = {}
            if images:  # noise conditioning augmentation of the previous stage's image
                schedule = NoiseSchedule(stage.schedule)
                low_res = augment_low_res(upsample_low_res(images[-1], size), noise_level, draw(shape), schedule)
                level = torch.full((2 * batch,), noise_level, dtype=torch.int64)
                extra = {"low_res": torch.cat([low_res, low_res]), "noise_level": level}
            sampler = stage.sampler()
            timesteps = sampler.set_timesteps(steps)
            x = draw(shape) * float(sampler.init_noise_sigma)
            learned = stage.schedule.variance_type == "learned_range"  # else the variance output is unused
            for t in timesteps:
                model_input = sampler.scale_model_input(x, t)
                t_batch = torch.full((2 * batch,), float(t), dtype=torch.float32)
                output = stage.unet(torch.cat([model_input, model_input]), t_batch, text, **extra)
                uncond, cond = output[:batch], output[batch:]
                guided = classifier_free_guidance(uncond[:, :IMAGE_CHANNELS], cond[:, :IMAGE_CHANNELS], guidance)
                x = sampler.step(torch.cat([guided, cond[:, IMAGE_CHANNELS:]], dim=1) if learned else guided, t, x,
                                 draw(shape))
            images.append(x.clamp(-1.0, 1.0))
        return images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as the runtime does."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
