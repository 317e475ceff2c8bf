"""Recipe: train the tiny latent-diffusion demo model on the shapes dataset and save it as a diffusers folder.

    python -m genrt.sdk.train.recipes.ldm_shapes --out DIR [--minutes N] [--ae-steps N] [--text-steps N]
        [--unet-steps N]

Built from genrt's own definitions (``genrt.sdk.ldm``) at toy size, with Stable Diffusion's structure:
a KL autoencoder with factor 8 and 4 latent channels (64x64x3 -> 8x8x4), a U-Net with cross-attention,
a CLIP-architecture text encoder fed by the real CLIP BPE tokenizer, epsilon prediction on SD's noise
schedule, conditioning dropout for classifier-free guidance.

Phase A trains the autoencoder alone: L1 + L2 reconstruction of a posterior sample plus a small KL
(``genrt.sdk.ldm.training.autoencoder_loss``'s terms plus L2, no perceptual or adversarial term: the flat shapes do not
need them). Its latent scaling factor is then set, as SD's 0.18215 was, to 1 / std of the latents, and
``latent_pool`` dataset items of a second seed are encoded once for the next two phases.
Phase T pre-trains the text encoder contrastively, as CLIP was: CLIP's image-to-text loss between the text
encoder (mean of its 77 token states, projected) and a small image tower over posterior samples, with all 36
captions as the candidates of every latent; the image tower is dropped afterwards.
Phase B freezes the autoencoder and the text encoder, as SD freezes its CLIP, and trains the U-Net on the
latents and the text encoder's embeddings of the 36 captions (``genrt.sdk.ldm.training.diffusion_loss``,
cond dropout 0.1 to the empty prompt).
EMA weights of phases A and B are the ones saved; the folder stores them as float16 (half the size; loading
casts back to float32). Every draw depends on (seed, phase, step) only, so a killed run started again with the
same ``--out`` resumes from its checkpoints and ends with the same weights. Output: ``DIR/pipeline`` (the
diffusers folder, with the CLIP tokenizer's own files), ``DIR/phase_a``, ``DIR/phase_t``, ``DIR/phase_b``
(checkpoints, loss.png), ``DIR/summary.json`` (with the adherence of the saved folder).

Measured (2 loaded cores, 2026-12-03, the defaults): phase A 1200 steps (~7 minutes); phase T 400 steps at
~10 steps/s (loss 0.35; the text tower picks the right caption of a fresh latent 90% of the time); phase B
3000 steps at ~2.2 steps/s (~22 minutes, loss 0.026). The sdk reference draws 140/144 images that adhere
(97.2%: 4 per caption at the folder's DDIM, 50 steps, guidance 7.5). Phase B trained the text encoder jointly
with the U-Net before (1590 steps): 4/36 adhered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genrt.adherence import AdherenceScore, score
from genrt.fileio import write_text_atomic
from genrt.sampling import NoiseSchedule
from genrt.sdk.data.shapes import ShapesDataset
from genrt.sdk.ldm.checkpoint import from_pretrained, save_pretrained
from genrt.sdk.ldm.config import AutoencoderKLConfig, LDMConfig, TextEncoderConfig, UNetConfig
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.pipeline import StableDiffusionReference
from genrt.sdk.ldm.text_encoder import load_tokenizer, tokenize
from genrt.sdk.ldm.training import diffusion_loss
from genrt.sdk.train.common import FIXTURES, cosine_lr
from genrt.sdk.train.loop import LoopConfig, train
from genrt.shapes import all_captions

# The real CLIP BPE tokenizer (SD 1.x's), copied into the saved folder.
TOKENIZER = FIXTURES / "sd15" / "tokenizer"

CONFIG = LDMConfig(
    name="ldm-shapes",
    unet=UNetConfig(
        block_out_channels=(32, 64),  # 8x8 and 4x4 latents
        layers_per_block=1,
        attention_levels=(True, True),
        attention_heads=(4, 4),  # head dims 8, 16
        cross_attention_dim=32,
        norm_num_groups=8,
    ),
    vae=AutoencoderKLConfig(
        block_out_channels=(8, 16, 32, 32),  # 64 -> 32 -> 16 -> 8: factor 8
        layers_per_block=1,
        # one group: with 2 channels per group the decoder's last GroupNorm fixes each image's mean colour
        # (every reconstruction came out the same brown)
        norm_num_groups=1,
        latent_channels=4,
    ),
    text_encoder=TextEncoderConfig(
        hidden_size=32,  # vocab stays CLIP's 49408 for the real tokenizer
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
    ),
    image_size=64,
)


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Sizes and rates of the three phases."""

    ae_steps: int = 1200  # phase A optimiser steps (~7 minutes at ~2.8 steps/s on a loaded 2-core machine)
    ae_batch: int = 8  # images per autoencoder step
    ae_lr: float = 2e-3  # AdamW peak learning rate (cosine to 5%)
    kl_weight: float = 1e-5  # weight of the summed KL against the summed L1 + L2
    text_steps: int = 400  # phase T (contrastive text encoder) optimiser steps
    text_batch: int = 128  # latents per contrastive step
    text_lr: float = 2e-3  # AdamW peak learning rate (cosine to 5%)
    image_tower_width: int = 64  # channels of the contrastive image encoder (not shipped)
    unet_steps: int = 3000  # phase B optimiser steps (~2.2 steps/s on a loaded 2-core machine: ~22 minutes)
    unet_batch: int = 32  # latents per denoiser step
    unet_lr: float = 2e-3  # AdamW peak learning rate (cosine to 5%)
    cond_dropout: float = 0.1  # probability of the empty prompt (classifier-free guidance)
    latent_pool: int = 8192  # dataset images encoded once for phases T and B
    ema_decay: float = 0.999  # EMA of phases A and B
    seed: int = 0  # dataset and noise seed
    eval_images_per_caption: int = 4  # images per caption of the adherence of the saved folder


def generator(seed: int, phase: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 7919 + phase) << 32) + step)


def images_tensor(dataset: ShapesDataset, indices) -> torch.Tensor:
    """Dataset items -> (B, 3, 64, 64) float32 in [-1, 1]."""
    pixels = np.stack([dataset[int(i)].image for i in indices])
    return torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


def train_autoencoder(model: LatentDiffusion, recipe: RecipeConfig, out: Path, max_seconds: float | None):
    """Phase A: the autoencoder on dataset items (step s uses items s*B .. s*B+B-1 of seed ``seed``)."""
    vae = model.vae
    dataset = ShapesDataset(seed=recipe.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.ae_lr, weight_decay=0.0)
    pixels_per_image = 3 * CONFIG.image_size ** 2
    latent = CONFIG.latent_size

    def step_fn(step: int) -> torch.Tensor:
        cosine_lr(optimizer, recipe.ae_lr, step, recipe.ae_steps)
        images = images_tensor(dataset, range(step * recipe.ae_batch, (step + 1) * recipe.ae_batch))
        noise = torch.randn((recipe.ae_batch, 4, latent, latent), generator=generator(recipe.seed, 1, step))
        reconstruction, posterior = vae(images, noise)  # (B, 3, 64, 64), q(z | x) with z = mean + std * noise
        batch = images.shape[0]
        l1 = (images - reconstruction).abs().sum() / batch  # as autoencoder_loss, plus an L2 term
        l2 = (images - reconstruction).pow(2).sum() / batch
        kl = posterior.kl().sum() / batch
        return (l1 + l2 + recipe.kl_weight * kl) / pixels_per_image  # per pixel

    state = train(vae, optimizer, step_fn, LoopConfig(out=out, steps=recipe.ae_steps, checkpoint_every=250,
                                                      ema_decay=recipe.ema_decay, max_seconds=max_seconds,
                                                      description="phase A autoencoder"))
    state.ema.copy_to(vae)
    return state


@torch.no_grad()
def encode_pool(model: LatentDiffusion, recipe: RecipeConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Posterior mean and std (N, 4, 8, 8) of ``latent_pool`` items of a second seed, and their captions."""
    dataset = ShapesDataset(seed=recipe.seed + 1)
    model.vae.eval()
    means, stds, captions = [], [], []
    for start in range(0, recipe.latent_pool, 256):
        indices = range(start, min(start + 256, recipe.latent_pool))
        posterior = model.vae.posterior(images_tensor(dataset, indices))
        means.append(posterior.mean)
        stds.append(posterior.std)
        captions += [dataset[i].caption for i in indices]
    return torch.cat(means), torch.cat(stds), captions


@dataclasses.dataclass(frozen=True)
class LatentPool:
    """Phase A's encodings of ``latent_pool`` dataset items, the prompts' tokens and each item's prompt."""

    mean: torch.Tensor  # (N, 4, 8, 8) posterior means
    std: torch.Tensor  # (N, 4, 8, 8) posterior standard deviations
    label: torch.Tensor  # (N,) index of each item's caption in ``prompts``
    ids: torch.Tensor  # (37, 77) tokens of the 36 captions and, last, the empty prompt
    factor: float  # latent scaling factor

    def draw(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` scaled posterior samples (B, 4, 8, 8) and their caption indices (B,)."""
        pick = torch.randint(0, self.mean.shape[0], (batch,), generator=g)
        eps = torch.randn(self.mean[pick].shape, generator=g)
        return (self.mean[pick] + self.std[pick] * eps) * self.factor, self.label[pick]


def latent_pool(model: LatentDiffusion, recipe: RecipeConfig) -> LatentPool:
    mean, std, captions = encode_pool(model, recipe)
    prompts = list(all_captions()) + [""]
    ids = tokenize(model.tokenizer, prompts, CONFIG.text_encoder.max_position_embeddings)
    label = torch.tensor([prompts.index(c) for c in captions])
    return LatentPool(mean, std, label, ids, model.config.latent_scaling_factor)


class ContrastivePair(nn.Module):
    """CLIP's two towers for phase T: the text encoder (mean over its 77 token states, projected) and a small
    image encoder over scaled latents (B, 4, 8, 8); both end in unit vectors (B, D) with a learnt temperature."""

    def __init__(self, text_encoder: nn.Module, width: int, dim: int):
        super().__init__()
        self.text_encoder = text_encoder
        self.text_projection = nn.Linear(dim, dim, bias=False)
        self.image_encoder = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),  # 8x8 -> 4x4
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),  # 4x4 -> 2x2
            nn.Flatten(), nn.Linear(4 * width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    def text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_encoder(ids).mean(dim=1)), dim=-1)

    def image(self, latents: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(latents), dim=-1)


def train_text_encoder(model: LatentDiffusion, pool: LatentPool, recipe: RecipeConfig, out: Path,
                       max_seconds: float | None):
    """Phase T: contrastive pre-training of the text encoder against latents (CLIP's image-to-text loss with
    all 36 captions as the candidates of every image); the image tower is dropped afterwards."""
    model.text_encoder.requires_grad_(True)  # CLIPTextEncoder is built frozen
    pair = ContrastivePair(model.text_encoder, recipe.image_tower_width, CONFIG.text_encoder.hidden_size)
    optimizer = torch.optim.AdamW(pair.parameters(), lr=recipe.text_lr, weight_decay=0.0)

    def step_fn(step: int) -> torch.Tensor:
        cosine_lr(optimizer, recipe.text_lr, step, recipe.text_steps)
        latents, label = pool.draw(recipe.text_batch, generator(recipe.seed, 3, step))
        logits = pair.logit_scale.clamp(max=math.log(100)).exp() * pair.image(latents) @ pair.text(pool.ids[:36]).T
        return F.cross_entropy(logits, label)  # (B, 36) image-caption similarities

    state = train(pair, optimizer, step_fn, LoopConfig(out=out, steps=recipe.text_steps, checkpoint_every=250,
                                                       ema_decay=None, max_seconds=max_seconds,
                                                       description="phase T text encoder (contrastive)"))
    model.text_encoder.requires_grad_(False)
    with torch.no_grad():  # zero-shot accuracy on fresh posterior samples
        latents, label = pool.draw(1024, generator(recipe.seed, 4, 0))
        accuracy = float(((pair.image(latents) @ pair.text(pool.ids[:36]).T).argmax(1) == label).float().mean())
    return state, accuracy


def train_denoiser(model: LatentDiffusion, pool: LatentPool, recipe: RecipeConfig, out: Path,
                   max_seconds: float | None):
    """Phase B: the U-Net on the frozen autoencoder's latents and the frozen text encoder's embeddings."""
    schedule = NoiseSchedule(model.config.schedule_config())
    model.text_encoder.eval()
    with torch.no_grad():
        embeddings = model.text_encoder(pool.ids)  # (37, 77, D), computed once
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=recipe.unet_lr, weight_decay=0.0)

    def step_fn(step: int) -> torch.Tensor:
        cosine_lr(optimizer, recipe.unet_lr, step, recipe.unet_steps)
        g = generator(recipe.seed, 2, step)
        latents, label = pool.draw(recipe.unet_batch, g)
        return diffusion_loss(model.unet, schedule, latents, embeddings[label], embeddings[36:], g,
                              recipe.cond_dropout)

    state = train(model.unet, optimizer, step_fn, LoopConfig(out=out, steps=recipe.unet_steps, checkpoint_every=250,
                                                             ema_decay=recipe.ema_decay, max_seconds=max_seconds,
                                                             description="phase B U-Net"))
    state.ema.copy_to(model.unet)
    return state


@torch.no_grad()
def latent_std(model: LatentDiffusion, recipe: RecipeConfig) -> float:
    dataset = ShapesDataset(seed=recipe.seed + 2)
    model.vae.eval()
    return float(model.vae.posterior(images_tensor(dataset, range(512))).mean.std())


def save_folder(model: LatentDiffusion, folder: Path) -> None:
    """``model`` as a diffusers folder with float16 weights and the CLIP tokenizer's own files, as released."""
    if folder.exists():
        shutil.rmtree(folder)
    save_pretrained(model, folder, dtype=torch.float16)
    shutil.rmtree(folder / "tokenizer")
    (folder / "tokenizer").mkdir()
    for file in TOKENIZER.iterdir():  # file by file: copytree would copy the fixture's read-only modes
        shutil.copyfile(file, folder / "tokenizer" / file.name)


def measure_adherence(model: LatentDiffusion, images_per_caption: int, seed: int = 0) -> AdherenceScore:
    """Adherence of ``images_per_caption`` images of each of the 36 captions, drawn by the sdk reference pipeline
    at its defaults (the folder's DDIM, 50 steps, guidance 7.5), one call with runtime-equal noise from ``seed``."""
    captions = list(all_captions())
    result = StableDiffusionReference(model)(captions, num_images_per_prompt=images_per_caption, seed=seed)
    return score(result.images, [c for c in captions for _ in range(images_per_caption)])


def run(out: Path, recipe: RecipeConfig, minutes: float | None = None) -> dict:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(1)  # one thread: a second one only waits on a shared, loaded machine
    started = time.perf_counter()
    deadline = None if minutes is None else started + 60.0 * minutes
    model = LatentDiffusion(CONFIG, load_tokenizer(TOKENIZER))

    def left(share: float) -> float | None:
        return None if deadline is None else max(0.0, (deadline - time.perf_counter()) * share)

    # Phase A may use ~40% of the time left, phase T ~10% of the rest, phase B all that is left (each stops at its
    # step count first).
    phase_a = train_autoencoder(model, recipe, out / "phase_a", left(0.4))
    for p in model.vae.parameters():
        p.requires_grad_(False)
    factor = 1.0 / latent_std(model, recipe)
    model.config = CONFIG.replace(latent_scaling_factor=factor,
                                  vae=dataclasses.replace(CONFIG.vae, scaling_factor=factor))
    pool = latent_pool(model, recipe)
    phase_t, text_accuracy = train_text_encoder(model, pool, recipe, out / "phase_t", left(0.1))
    phase_b = train_denoiser(model, pool, recipe, out / "phase_b", left(1.0))
    folder = out / "pipeline"
    save_folder(model.eval(), folder)
    summary = {
        "phase_a": {"steps": phase_a.step, "steps_per_second": phase_a.steps_per_second,
                    "final_loss_mean50": float(np.mean(phase_a.losses[-50:]))},
        "phase_t": {"steps": phase_t.step, "steps_per_second": phase_t.steps_per_second,
                    "final_loss_mean50": float(np.mean(phase_t.losses[-50:])), "zero_shot_accuracy": text_accuracy},
        "phase_b": {"steps": phase_b.step, "steps_per_second": phase_b.steps_per_second,
                    "final_loss_mean50": float(np.mean(phase_b.losses[-50:]))},
        "latent_scaling_factor": factor,
        "recipe": dataclasses.asdict(recipe),
        "training_seconds": time.perf_counter() - started,
        "text_encoder": "pre-trained contrastively against latents (phase T), then frozen for the U-Net (phase B)",
    }
    adherence = measure_adherence(from_pretrained(folder), recipe.eval_images_per_caption)  # the float16 weights
    summary["adherence"] = {"images": adherence.total, "adherent": adherence.adherent, "rate": adherence.rate,
                            "colour": adherence.colour, "shape": adherence.shape,
                            "background": adherence.background,
                            "sampler": model.config.scheduler().sampler, "num_inference_steps": 50,
                            "guidance_scale": model.config.guidance_scale}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# RecipeConfig fields the command line sets
INT_OPTIONS = ("ae_steps", "ae_batch", "text_steps", "unet_steps", "unet_batch", "latent_pool", "seed",
               "eval_images_per_caption")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genrt.sdk.train.recipes.ldm_shapes",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for checkpoints, loss curves and pipeline/")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time budget of the three phases")
    defaults = RecipeConfig()
    for name in INT_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(defaults, **{name: getattr(args, name) for name in INT_OPTIONS})
    summary = run(args.out, recipe, args.minutes)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
