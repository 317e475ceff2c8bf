"""Test-only: tiny torch stand-ins for each family's components, exported into schema-1 folders.

The modules have the I/O of docs/contracts.md at toy sizes, so the runtime pipelines can be run end
to end in milliseconds and compared with a torch loop on the same modules. ``ToySampler`` follows
the sampler protocol with plain arithmetic, so it steps numpy arrays (runtime) and torch tensors
(reference) identically.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from genrt.settings import ImagenSettings, ImagenStageSettings, LdmSettings, TokenizerSettings, VqganSettings
from tests.runtime.tiny_exports import export_component, write_manifest, write_tokenizer

TEXT_LENGTH = 16  # tokens per prompt of the tiny text encoders
TEXT_DIM = 16  # width of the tiny text embeddings
VOCAB = 128  # rows of the tiny token embeddings (the test tokenizers have < 128 tokens)
SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1,
             "variance_type": "fixed_small"}


class ToySampler:
    """A stochastic sampler of the contracts.md protocol (plus ``add_noise`` for img2img) written in operators only: the same code steps numpy arrays and torch tensors."""

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


class TorchNoise:
    """A runtime noise source drawing with a seeded torch generator (what the torch reference uses)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def standard_normal(self, size, dtype=np.float32):
        return torch.randn(tuple(size), generator=self.generator).numpy().astype(dtype)

    def random(self, size, dtype=np.float64):
        return torch.rand(tuple(size), generator=self.generator, dtype=torch.float64).numpy().astype(dtype)


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module.eval()


# -- latent diffusion ------------------------------------------------------------------------------
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
    return {"text_encoder": _seeded(TinyTextEncoder(), 1), "unet": _seeded(TinyUNet(), 2),
            "vae_decoder": _seeded(TinyVAEDecoder(), 3), "vae_encoder": _seeded(TinyVAEEncoder(), 4)}


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


def run_in_threads(work: Callable[[int], object], count: int) -> list:
    """``[work(0), ..., work(count - 1)]``, each call in its own thread, all started together; an exception
    raised in a thread is re-raised here."""
    results, errors = [None] * count, []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as exc:  # re-raised in the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, computed independently of the runtime's helper."""
    return np.round(np.clip((images.astype(np.float64) + 1.0) * 127.5, 0, 255)).astype(np.uint8).transpose(0, 2, 3, 1)


# -- VQGAN -----------------------------------------------------------------------------------------
CODES = 16  # codebook entries of the tiny VQGAN
CODE_DIM = 8  # width of a codebook entry
VQ_FACTOR = 4  # pixels per code
PRIOR_HEADS, PRIOR_HEAD_DIM = 2, 4
PRIOR_BLOCK = 40  # positions of the tiny prior (condition prefix + codes)
CLASSES = 10


class TinyVQEncoder(nn.Module):
    """image (B, 3, H, W) -> indices (B, H/4, W/4) int32 (nearest codebook entry)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, CODE_DIM, 1)
        self.codebook = nn.Parameter(torch.zeros(CODES, CODE_DIM))

    def forward(self, image):
        z = self.conv(nn.functional.avg_pool2d(image, VQ_FACTOR)).permute(0, 2, 3, 1)  # (B, h, w, C)
        distances = (z[..., None, :] - self.codebook).pow(2).sum(-1)  # (B, h, w, K)
        return distances.argmin(-1).to(torch.int32)


class TinyVQDecoder(nn.Module):
    """indices (B, h, w) int32 -> image (B, 3, 4h, 4w)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(CODES, 3)

    def forward(self, indices):
        x = self.embed(indices.long()).permute(0, 3, 1, 2)  # (B, 3, h, w)
        return torch.tanh(nn.functional.interpolate(x, scale_factor=VQ_FACTOR, mode="nearest"))


class TinyPrior(nn.Module):
    """One causal attention layer with a KV cache, in the ``prior`` I/O of docs/contracts.md:
    input_ids (B, T), position (1,), past_key_values (1, 2, B, heads, P, d) -> logits (B, T, V),
    present_key_values (1, 2, B, heads, P+T, d)."""

    def __init__(self):
        super().__init__()
        width = PRIOR_HEADS * PRIOR_HEAD_DIM
        self.tok = nn.Embedding(CODES, width)
        self.pos = nn.Embedding(PRIOR_BLOCK, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, CODES)

    def forward(self, input_ids, position, past_key_values):
        batch, length = input_ids.shape
        positions = position.long() + torch.arange(length)  # (T,)
        x = self.tok(input_ids.long()) + self.pos(positions)  # (B, T, C)
        q, k, v = (t.reshape(batch, length, PRIOR_HEADS, PRIOR_HEAD_DIM).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))  # (B, heads, T, d)
        k = torch.cat([past_key_values[0, 0], k], dim=2)  # (B, heads, P+T, d)
        v = torch.cat([past_key_values[0, 1], v], dim=2)
        keys = torch.arange(k.shape[2])  # absolute positions 0..P+T-1
        scores = q @ k.transpose(-1, -2) / PRIOR_HEAD_DIM ** 0.5  # (B, heads, T, P+T)
        scores = scores.masked_fill(keys[None, :] > positions[:, None], float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)  # (B, T, C)
        return self.head(x + out), torch.stack([k, v])[None]


def vqgan_modules() -> dict[str, nn.Module]:
    return {"encoder": _seeded(TinyVQEncoder(), 5), "decoder": _seeded(TinyVQDecoder(), 6),
            "prior": _seeded(TinyPrior(), 7)}


def build_vqgan(root: Path) -> Path:
    """A tiny vqgan export: 4x4 code grids (16x16 images) by default, class-conditional prior."""
    modules = vqgan_modules()
    cache = ("L", 2, "B", PRIOR_HEADS, "P", PRIOR_HEAD_DIM)  # the exported axes

    components = {
        "encoder": export_component(
            root, "encoder", modules["encoder"], [("image", np.zeros((2, 3, 16, 16), np.float32), ("B", 3, "H", "W"))],
            [("indices", "int32", ("B", "H/4", "W/4"))],
            {"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 16, 16], "max": [4, 3, 32, 32]}}),
        "decoder": export_component(
            root, "decoder", modules["decoder"], [("indices", np.zeros((2, 4, 4), np.int32), ("B", "h", "w"))],
            [("image", "float32", ("B", 3, "4*h", "4*w"))],
            {"indices": {"min": [1, 2, 2], "opt": [2, 4, 4], "max": [4, 8, 8]}}),
        "prior": export_component(
            root, "prior", modules["prior"],
            [("input_ids", np.zeros((2, 2), np.int32), ("B", "T")), ("position", np.array([3], np.int32), (1,)),
             ("past_key_values", np.zeros((1, 2, 2, PRIOR_HEADS, 3, PRIOR_HEAD_DIM), np.float32), cache)],
            [("logits", "float32", ("B", "T", CODES)), ("present_key_values", "float32", cache)],
            {"input_ids": {"min": [1, 1], "opt": [2, 1], "max": [4, 4]},
             "past_key_values": {"min": [1, 2, 1, PRIOR_HEADS, 0, PRIOR_HEAD_DIM],
                                 "opt": [1, 2, 2, PRIOR_HEADS, 16, PRIOR_HEAD_DIM],
                                 "max": [1, 2, 4, PRIOR_HEADS, PRIOR_BLOCK - 1, PRIOR_HEAD_DIM]}}),
    }
    # the cache has one layer: the manifest's shape has the fixed layer count
    prior = components["prior"]
    fixed = (1,) + cache[1:]
    components["prior"] = dataclasses.replace(
        prior, inputs=prior.inputs[:2] + (dataclasses.replace(prior.inputs[2], shape=fixed),),
        outputs=(prior.outputs[0], dataclasses.replace(prior.outputs[1], shape=fixed)))
    settings = VqganSettings(downsample_factor=VQ_FACTOR, n_embed=CODES, image_size=16, block_size=PRIOR_BLOCK,
                             n_condition_tokens=1, condition_vocab_size=CLASSES, n_layer=1, n_head=PRIOR_HEADS,
                             head_dim=PRIOR_HEAD_DIM, temperature=1.0)
    return write_manifest(root, "vqgan", components, settings)


@torch.no_grad()
def reference_prior_codes(prior: nn.Module, prefix: np.ndarray, count: int, seed: int, temperature: float = 1.0,
                          top_k: int | None = None) -> np.ndarray:
    """Codes (B, count) drawn with full-sequence (uncached) prior calls and the runtime's inverse-CDF
    rule on torch-drawn uniforms."""
    noise = TorchNoise(seed)
    sequence = torch.from_numpy(prefix).long()
    batch = sequence.shape[0]
    for _ in range(count):
        empty = torch.zeros(1, 2, batch, PRIOR_HEADS, 0, PRIOR_HEAD_DIM)
        logits = prior(sequence, torch.zeros(1, dtype=torch.int32), empty)[0][:, -1].double() / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_k == 1:
            token = logits.argmax(-1)
        else:
            cumulative = logits.softmax(-1).cumsum(-1)
            uniform = torch.from_numpy(noise.random((batch,)))
            token = (cumulative <= uniform[:, None] * cumulative[:, -1:]).sum(-1).clamp(max=CODES - 1)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    return sequence[:, prefix.shape[1]:].numpy().astype(np.int32)


# -- Imagen ----------------------------------------------------------------------------------------
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
    return {"t5_encoder": _seeded(TinyT5(), 8), "base_unet": _seeded(TinyImagenUNet(False), 9),
            "sr_unet_256": _seeded(TinyImagenUNet(True), 10), "sr_unet_1024": _seeded(TinyImagenUNet(True), 11)}


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
