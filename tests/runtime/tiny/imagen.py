"""The tiny Imagen family: a T5 stand-in and a three-stage U-Net cascade (8, 16, 32 pixels), their export folder
and the cascade in torch with genrt.sdk's sampling loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrt.settings import ImagenSettings, ImagenStageSettings, TokenizerSettings
from tests.runtime.tiny.common import TEXT_DIM, TEXT_LENGTH, VOCAB, seeded
from tests.runtime.tiny.exports import export_component, write_manifest, write_tokenizer

IMAGEN_STAGES = ("base_unet", "sr_unet_256", "sr_unet_1024")
IMAGEN_SIZES = (8, 16, 32)  # base, SR 1, SR 2 resolutions of the tiny cascade
IMAGEN_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "cosine", "beta_start": 0.0001, "beta_end": 0.02,
                    "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0,
                    "variance_type": "learned_range"}


class TinyT5(nn.Module):
    """input_ids (B, T), attention_mask (B, T) -> text_embeddings (B, T, D) (padding rows zeroed)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, TEXT_DIM)

    def forward(self, input_ids, attention_mask):
        return torch.tanh(self.embed(input_ids.long())) * attention_mask[..., None].float()


class TinyImagenUNet(nn.Module):
    """sample (B, 3, H, W), timestep (B,), text_embeddings (B, T, D), text_mask (B, T)
    [, low_res (B, 3, H, W), noise_level (B,)] -> model_output (B, 6, H, W)."""

    def __init__(self, super_resolution: bool):
        super().__init__()
        self.super_resolution = super_resolution
        self.conv = nn.Conv2d(6 if super_resolution else 3, 6, 3, padding=1)
        self.text = nn.Linear(TEXT_DIM, 6)

    def forward(self, sample, timestep, text_embeddings, text_mask, low_res=None, noise_level=None):
        mask = text_mask.float()[..., None]  # (B, T, 1)
        pooled = (text_embeddings * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)
        x = torch.cat([sample, low_res], dim=1) if self.super_resolution else sample
        out = self.conv(x) + self.text(pooled)[:, :, None, None] + 0.1 * torch.sin(timestep / 100.0)[:, None, None, None]
        if self.super_resolution:
            out = out + 0.1 * torch.cos(noise_level.float() / 100.0)[:, None, None, None]
        return 0.5 * torch.tanh(out)


def imagen_modules() -> dict[str, nn.Module]:
    return {"t5_encoder": seeded(TinyT5(), 8), "base_unet": seeded(TinyImagenUNet(False), 9),
            "sr_unet_256": seeded(TinyImagenUNet(True), 10), "sr_unet_1024": seeded(TinyImagenUNet(True), 11)}


def build_imagen(root: Path) -> Path:
    """A tiny imagen cascade export: 8x8 base, 16x16 and 32x32 super-resolution, batch 1..4 (CFG rows)."""
    modules = imagen_modules()
    text = [("text_embeddings", np.zeros((2, TEXT_LENGTH, TEXT_DIM), np.float32), ("B", TEXT_LENGTH, TEXT_DIM)),
            ("text_mask", np.ones((2, TEXT_LENGTH), np.int32), ("B", TEXT_LENGTH))]
    batch = {"min": [1], "opt": [2], "max": [4]}

    def unet(name: str, size: int, super_resolution: bool) -> dict:
        image = ("B", 3, size, size)
        inputs = [("sample", np.zeros((2, 3, size, size), np.float32), image),
                  ("timestep", np.zeros(2, np.float32), ("B",))] + text
        if super_resolution:
            inputs += [("low_res", np.zeros((2, 3, size, size), np.float32), image),
                       ("noise_level", np.zeros(2, np.int32), ("B",))]
        profile = {tensor: {point: [b] + list(shape[1:]) for point, (b,) in batch.items()}
                   for tensor, _, shape in inputs}
        return export_component(root, name, modules[name], inputs, [("model_output", "float32", ("B", 6, size, size))],
                                profile)

    ids = [("input_ids", np.zeros((2, TEXT_LENGTH), np.int32), ("B", TEXT_LENGTH)),
           ("attention_mask", np.ones((2, TEXT_LENGTH), np.int32), ("B", TEXT_LENGTH))]
    components = {
        "t5_encoder": export_component(root, "t5_encoder", modules["t5_encoder"], ids,
                                       [("text_embeddings", "float32", ("B", TEXT_LENGTH, TEXT_DIM))]),
        "base_unet": unet("base_unet", IMAGEN_SIZES[0], False),
        "sr_unet_256": unet("sr_unet_256", IMAGEN_SIZES[1], True),
        "sr_unet_1024": unet("sr_unet_1024", IMAGEN_SIZES[2], True),
    }
    write_tokenizer(root / "tokenizer", "t5")
    stages = tuple(ImagenStageSettings(component=name, resolution=size, guidance_scale=guidance,
                                       scheduler=IMAGEN_SCHEDULER, num_steps=steps)
                   for name, size, guidance, steps in zip(IMAGEN_STAGES, IMAGEN_SIZES, (5.0, 3.0, 2.0), (3, 2, 2)))
    settings = ImagenSettings(stages=stages, sr_noise_level=250, threshold_percentile=0.95, max_length=TEXT_LENGTH,
                              tokenizer=TokenizerSettings(folder="tokenizer/", kind="folder"), sampler="ddpm")
    return write_manifest(root, "imagen", components, settings)


@torch.no_grad()
def reference_imagen(modules: dict, ids: np.ndarray, mask: np.ndarray, steps: list[int], guidance: list[float],
                     seed: int, noise_level: int = 250, percentile: float = 0.95) -> np.ndarray:
    """The cascade with genrt.sdk (sampling loop, DDPM sampler, low-res augmentation) on ``modules``:
    tokens of [negatives; prompts] -> the last stage's images (B, 3, H, W)."""
    from genrt.sampling import NoiseSchedule, ScheduleConfig, make_sampler
    from genrt.sdk.diffusion.sample import sample
    from genrt.sdk.imagen.augment import augment_low_res, upsample_low_res

    config = ScheduleConfig(**IMAGEN_SCHEDULER)
    generator = torch.Generator().manual_seed(seed)
    text_mask = torch.from_numpy(mask)
    text = modules["t5_encoder"](torch.from_numpy(ids), text_mask)
    batch = ids.shape[0] // 2
    images = None
    for index, name in enumerate(["base_unet", "sr_unet_256", "sr_unet_1024"][:len(steps)]):
        size = IMAGEN_SIZES[index]
        shape = (batch, 3, size, size)
        extra = ()
        if images is not None:
            low_res = upsample_low_res(images, size)
            augmented = augment_low_res(low_res, noise_level, torch.randn(shape, generator=generator),
                                        NoiseSchedule(config))
            extra = (torch.cat([augmented, augmented]), torch.full((2 * batch,), noise_level, dtype=torch.int32))
        sampler = make_sampler("ddpm", config, dynamic_threshold_percentile=percentile)
        images = sample(lambda x, t, name=name, extra=extra: modules[name](x, t, text, text_mask, *extra),
                        sampler, shape, steps[index], generator, guidance_scale=guidance[index])
    return images.numpy()
