"""Recipe: train the tiny Imagen demo cascade on the shapes dataset and save it as DeepFloyd-IF diffusers folders.

    python -m genrt.sdk.train.recipes.imagen_shapes --out DIR [--minutes N] [--base-steps N] [--sr-steps N]

Built from genrt's own definitions at toy size, with DeepFloyd IF's structure (``genrt.sdk.imagen.if_unet``):
a T5 v1.1-architecture encoder fed by the real T5 v1.1 tokenizer, a 32x32 pixel-space base U-Net
(stage I) and a 32 -> 128 super-resolution U-Net (stage II) conditioned on the upsampled low-res image
and its noise-augmentation level; v-prediction (IF predicts epsilon) with a learned variance range (iDDPM
hybrid loss) on IF's cosine schedule, sampled with IF's dynamic thresholding of x_0 (ratio 0.95, max 1.5).
Why v: an epsilon model's x_0 at t = 999 (abar 2.4e-9) is its epsilon error times 2e4, so the first of
few trailing steps puts clipped noise into x_t, and the loss barely rewards reading the low-res image at
high t (stage II's x_0 from the true x_900 was 38/255 off, the upsampled input alone is 3/255 off).

Data: ``ShapesDataset`` rendered at 128x128 (the same scenes as at 64, drawn at 128); stage I learns their
4x4 area averages (32x32), stage II the 128 images from those 32x32 images.
Phase A trains the text encoder and stage I *jointly* from random initialisation (each step encodes the 36
captions and the empty prompt; a prompt is replaced by the empty one with probability 0.1 for classifier-free
guidance). Unlike IF, whose T5-XXL was pre-trained on text and frozen, the 36 captions are learnt end to end.
Phase B freezes the encoder and trains stage II on random 64x64 crops of (target, upsampled low-res) pairs
(fully convolutional; 4x cheaper than whole images), the low-res input noised at a random augmentation level
in 0..``max_augmentation_level``-1 (noise conditioning augmentation; inference uses level 250), with the same
prompt dropout. Stage II shares stage I's text encoder, as IF's stage II does (its folder has none).
EMA weights of both phases are the ones saved. Every draw depends on (seed, phase, step) only, so a killed
run started again with the same ``--out`` resumes from its checkpoints and ends with the same weights.
Output: ``DIR/stage_I``, ``DIR/stage_II`` (the diffusers folders), ``DIR/phase_a``, ``DIR/phase_b``
(checkpoints, loss.png), ``DIR/summary.json``.

Measured (2026-12-04, 1 thread, the other core busy with other jobs), this recipe: phase A 3500 steps at 1.87
steps/s (31.3 min, weighted loss 0.0031), phase B 3000 steps at 3.81 steps/s (13.1 min, loss 0.043): about 45 min
from scratch (phase B measured resumed from phase A's last checkpoint, which gives the same weights; a run from
scratch the same day, with other jobs on the cores, took 49.6 min and wrote byte-identical folders). Weights
float16: T5 2.1 MB, stage I 1.7 MB, stage II 0.7 MB. Adherence at the folders' defaults (stage I 25 trailing DDPM
steps, guidance 4, thresholding 0.95 / 1.5; stage II 4 steps, guidance 1, posterior variance, level 250), PyTorch,
seeds 0 / 1: stage I alone at 32x32 35 / 36 of 36; the cascade at 128x128 36 / 36 (colour and background 36 /
36); through export -> ONNX Runtime: tests/models/test_imagen_shapes.py and `make demo`.
Stage II's sampler on these weights (seeds 0 / 1, 128x128): guidance 4 35 / 36 (after 1200 phase B steps 31 / 34,
level 100 34 / 34, level 400 27 / 30, 8 steps 30 / 34): guidance sharpens stage II's shapes away from the
upsampled input (guidance 1.5 and 2: 34 / 36 after 1200 steps).
How it got here (each from scratch, 128x128 at 4 stage II steps): epsilon prediction 5/36 (x_0 at t = 999 is
the epsilon error times 2e4); v-prediction 25 / 24 (misses: stage I's shapes); min-SNR-gamma weighting of phase A
(gamma 5; 2000 -> 3500 steps with 16x16 cross-attention alone gave no gain) stage I 35 / 36, cascade 28 / 30 at
guidance 4 after 1200 phase B steps; then 3000 phase B steps and guidance 1. Ruled out on the way: 64x64 crops
vs whole images, leading or linspace spacing instead of trailing, stage II's learned range over 4 strided steps
(dataset 32x32 images -> stage II 21/36; fixed_small 35/36). The scorer on the dataset's own 32x32 targets: 720/720.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrt.sampling import NoiseSchedule, SchedulerConfig
from genrt.sdk.data.shapes import ShapesDataset
from genrt.sdk.imagen.augment import augment_low_res, random_augmentation_levels, upsample_low_res
from genrt.sdk.imagen.checkpoint import DIFFUSERS_VERSION, save_if_unet
from genrt.sdk.imagen.config import IFUNetConfig, T5EncoderConfig
from genrt.sdk.imagen.if_unet import IFUNet
from genrt.sdk.imagen.text_encoder import t5_config
from genrt.sdk.imagen.training import vlb_term
from genrt.sdk.train.common import FIXTURES, Budget, cosine_lr, generator, recipe_main
from genrt.sdk.train.loop import LoopConfig, train
from genrt.shapes import all_captions

# The real T5 v1.1 tokenizer (tokenizer.json of google/t5-v1_1-*), saved into stage_I/tokenizer.
TOKENIZER_FILE = FIXTURES / "t5-v1_1" / "tokenizer.json"
MAX_LENGTH = 77  # T5 tokens per prompt in IF's pipelines (the export's length)
BASE_SIZE, SR_SIZE = 32, 128  # stage I and stage II resolutions
SQRT2 = math.sqrt(2.0)
WEIGHT_DTYPE = torch.float16  # of the saved folders (half the size; genrt and diffusers load them into float32)

TEXT_ENCODER = T5EncoderConfig(
    vocab_size=32128,  # T5 v1.1's vocabulary (the real tokenizer's ids): 32128 x 32 is most of the weights
    d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, max_length=MAX_LENGTH,
)
STAGE_I = IFUNetConfig(
    block_out_channels=(16, 32, 64),  # 32x32, 16x16, 8x8
    layers_per_block=(1, 1, 1),
    cross_attention=(False, True, True),  # text cross-attention at 16x16 and 8x8 (and in the mid block)
    in_channels=3, out_channels=6, attention_head_dim=32, cross_attention_dim=32,
    encoder_hid_dim=TEXT_ENCODER.d_model, addition_embed_type_num_heads=2,
    resnet_out_scale_factor=1.0, resnet_skip_time_act=False, mid_block_scale_factor=1.0,  # as IF-I
    noise_level_conditioning=False, sample_size=BASE_SIZE, norm_num_groups=4,
)
STAGE_II = IFUNetConfig(
    block_out_channels=(8, 16, 32, 32),  # 128, 64, 32, 16: attention only in the 16x16 mid block
    layers_per_block=(1, 1, 1, 1),
    cross_attention=(False, False, False, False),
    in_channels=6, out_channels=6, attention_head_dim=32, cross_attention_dim=32,
    encoder_hid_dim=TEXT_ENCODER.d_model, addition_embed_type_num_heads=2,
    resnet_out_scale_factor=SQRT2, resnet_skip_time_act=True, mid_block_scale_factor=SQRT2,  # as IF-II
    noise_level_conditioning=True, sample_size=SR_SIZE, norm_num_groups=4,
)
# Both stages' scheduler/scheduler_config.json: IF's DDPMScheduler (cosine betas, learned range, dynamic
# thresholding) with trailing timesteps, so that a short schedule still starts from pure noise at t = 999.
SCHEDULER = {
    "_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
    "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02,
    "trained_betas": None, "prediction_type": "v_prediction", "variance_type": "learned_range",
    "clip_sample": True, "clip_sample_range": 1.0, "thresholding": True, "dynamic_thresholding_ratio": 0.95,
    "sample_max_value": 1.5, "timestep_spacing": "trailing", "steps_offset": 0, "rescale_betas_zero_snr": False,
}
# Each folder's scheduler: stage II samples with the posterior variance (fixed_small; diffusers' IF pipelines then
# drop the U-Net's variance channels): its learned range, trained at stride 1 only, adds far more noise than
# the posterior's over 4 strided steps (dataset 32x32 images -> stage II: 21/36 adhere, fixed_small 35/36).
STAGE_SCHEDULERS = {"stage_I": SCHEDULER, "stage_II": SCHEDULER | {"variance_type": "fixed_small"}}
# Call defaults written into each folder's model_index.json ("_genrt_defaults", read by genrt export; diffusers
# skips it): (guidance scale, DDPM steps). Stage I at 32x32: guidance 4 draws every colour (7: 33/36); 50 or 100
# steps draw 1-3 more shapes right at 32x32 than 25, none more at 128x128. Stage II: guidance 1 keeps the shape of
# the upsampled stage I image (guidance 4 redraws a few edges: 35 / 36 against 36 / 36, see above).
CALL_DEFAULTS = {"stage_I": (4.0, 25), "stage_II": (1.0, 4)}
# Stage II's image_noising_scheduler (IF-II's): the same betas, used only to noise the low-res input.
NOISING_SCHEDULER = SCHEDULER | {"variance_type": "fixed_small", "clip_sample": False, "thresholding": False,
                                 "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Sizes and rates of the two phases."""

    pool: int = 4096  # dataset images rendered once (128x128) for both phases
    base_steps: int = 3500  # phase A optimiser steps (text encoder + stage I)
    base_batch: int = 32  # 32x32 images per phase A step
    base_lr: float = 2e-3  # AdamW peak learning rate (cosine to 5%)
    base_min_snr_gamma: float = 5.0  # phase A's MSE weighted min(SNR, gamma) / (SNR + 1) (min-SNR, v-prediction)
    sr_steps: int = 3000  # phase B optimiser steps (stage II)
    sr_batch: int = 12  # 64x64 crops per phase B step
    sr_crop: int = 64  # side of the stage II training crops
    sr_lr: float = 2e-3  # AdamW peak learning rate (cosine to 5%)
    max_augmentation_level: int = 500  # phase B augmentation levels uniform in 0..max-1 (inference: 250)
    cond_dropout: float = 0.1  # probability of the empty prompt (classifier-free guidance)
    vlb_weight: float = 0.001  # lambda of the iDDPM bound for the learned variance
    ema_decay: float = 0.999  # EMA of both phases
    seed: int = 0  # dataset and noise seed


def load_tokenizer():
    """The T5 v1.1 tokenizer (fast) from the fixture's tokenizer.json."""
    import transformers

    return transformers.T5TokenizerFast(tokenizer_file=str(TOKENIZER_FILE), eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", extra_ids=0)


@dataclasses.dataclass(frozen=True)
class Pool:
    """The rendered training images and their caption indices (into ``PROMPTS``)."""

    high: torch.Tensor  # (N, 3, 128, 128) uint8
    low: torch.Tensor  # (N, 3, 32, 32) float32 in [-1, 1]: 4x4 area averages of ``high``
    label: torch.Tensor  # (N,) int64


PROMPTS = list(all_captions()) + [""]  # the 36 captions and the empty prompt (index 36)
EMPTY = len(PROMPTS) - 1


def render_pool(recipe: RecipeConfig) -> Pool:
    dataset = ShapesDataset(seed=recipe.seed, resolution=SR_SIZE)
    items = [dataset[i] for i in range(recipe.pool)]
    high = torch.from_numpy(np.stack([item.image for item in items])).permute(0, 3, 1, 2).contiguous()
    low = nn.functional.avg_pool2d(high.float() / 127.5 - 1.0, SR_SIZE // BASE_SIZE)
    label = torch.tensor([PROMPTS.index(item.caption) for item in items])
    return Pool(high, low, label)


def build_text_encoder() -> nn.Module:
    """A randomly initialised T5 encoder (transformers.T5EncoderModel), trainable."""
    import transformers

    torch.manual_seed(0)
    return transformers.T5EncoderModel(t5_config(TEXT_ENCODER))


def encode_all(encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """T5 outputs of every prompt (37, 77, D), padding positions kept (IF's pipelines keep them)."""
    return encoder(input_ids=ids, attention_mask=mask).last_hidden_state


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) of a v-prediction MSE: min(SNR, gamma) / (SNR + 1), (B,) float32."""
    alpha_bar = torch.from_numpy(schedule.alphas_cumprod)[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    return (snr.clamp(max=gamma) / (snr + 1.0)).float()


def diffusion_loss(unet: IFUNet, schedule: NoiseSchedule, x0: torch.Tensor, text: torch.Tensor,
                   g: torch.Generator, recipe: RecipeConfig, low_res: torch.Tensor | None = None,
                   snr_gamma: float | None = None) -> torch.Tensor:
    """iDDPM hybrid loss of one batch: x0 (B, 3, H, W) in [-1, 1], text (B, 77, D); low_res (B, 3, H, W)
    upsampled (stage II: noised here at random levels); ``snr_gamma``: min-SNR weighting of the MSE term.
    Draws from ``g``: t, noise, then levels, aug noise."""
    batch = x0.shape[0]
    t = torch.randint(0, schedule.config.num_train_timesteps, (batch,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = schedule.add_noise(x0, noise, t)
    extra = {}
    if low_res is not None:
        levels = random_augmentation_levels(batch, recipe.max_augmentation_level, g)
        extra = {"low_res": augment_low_res(low_res, levels, torch.randn(low_res.shape, generator=g), schedule),
                 "noise_level": levels}
    output = unet(x_t, t.float(), text, **extra)  # (B, 6, H, W)
    prediction = output[:, :3]
    squared = ((prediction - schedule.training_target(x0, noise, t)) ** 2).mean(dim=(1, 2, 3))  # (B,)
    simple = (squared * min_snr_weight(schedule, t, snr_gamma)).mean() if snr_gamma else squared.mean()
    return simple + recipe.vlb_weight * vlb_term(schedule, x0, x_t, t, prediction, output[:, 3:]).mean()


def drop_prompts(label: torch.Tensor, g: torch.Generator, probability: float) -> torch.Tensor:
    """Labels with each replaced by the empty prompt with ``probability`` (classifier-free guidance)."""
    return torch.where(torch.rand(label.shape, generator=g) < probability, torch.full_like(label, EMPTY), label)


class TextAndBase(nn.Module):
    """Phase A's trained pair: the T5 encoder and the stage I U-Net."""

    def __init__(self, encoder: nn.Module, unet: IFUNet):
        super().__init__()
        self.encoder = encoder
        self.unet = unet


def train_base(model: TextAndBase, pool: Pool, tokens, schedule: NoiseSchedule, recipe: RecipeConfig, out: Path,
               max_seconds: float | None):
    """Phase A: text encoder + stage I on the pool's 32x32 images (indices drawn per step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.base_lr, weight_decay=0.0)

    def step_fn(step: int) -> torch.Tensor:
        cosine_lr(optimizer, recipe.base_lr, step, recipe.base_steps)
        g = generator(recipe.seed, 1, step)
        pick = torch.randint(0, recipe.pool, (recipe.base_batch,), generator=g)
        label = drop_prompts(pool.label[pick], g, recipe.cond_dropout)
        text = encode_all(model.encoder, *tokens)  # (37, 77, D): each distinct prompt once per step
        return diffusion_loss(model.unet, schedule, pool.low[pick], text[label], g, recipe,
                              snr_gamma=recipe.base_min_snr_gamma)

    state = train(model, optimizer, step_fn, LoopConfig(out=out, steps=recipe.base_steps, checkpoint_every=250,
                                                        ema_decay=recipe.ema_decay, max_seconds=max_seconds,
                                                        description="phase A T5 + stage I"))
    state.ema.copy_to(model)
    return state


def train_sr(unet: IFUNet, text: torch.Tensor, pool: Pool, schedule: NoiseSchedule, recipe: RecipeConfig, out: Path,
             max_seconds: float | None):
    """Phase B: stage II on random crops of (128 image, upsampled 32 image); text (37, 77, D) frozen."""
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.sr_lr, weight_decay=0.0)
    crop = recipe.sr_crop

    def step_fn(step: int) -> torch.Tensor:
        cosine_lr(optimizer, recipe.sr_lr, step, recipe.sr_steps)
        g = generator(recipe.seed, 2, step)
        pick = torch.randint(0, recipe.pool, (recipe.sr_batch,), generator=g)
        corners = torch.randint(0, SR_SIZE - crop + 1, (recipe.sr_batch, 2), generator=g)
        label = drop_prompts(pool.label[pick], g, recipe.cond_dropout)
        high = pool.high[pick].float() / 127.5 - 1.0  # (B, 3, 128, 128)
        low = upsample_low_res(pool.low[pick], SR_SIZE)  # as the runtime upsamples stage I's image
        rows = [(slice(None), slice(int(y), int(y) + crop), slice(int(x), int(x) + crop)) for y, x in corners]
        target = torch.stack([image[r] for image, r in zip(high, rows)])  # (B, 3, crop, crop)
        low_res = torch.stack([image[r] for image, r in zip(low, rows)])
        return diffusion_loss(unet, schedule, target, text[label], g, recipe, low_res=low_res)

    state = train(unet, optimizer, step_fn, LoopConfig(out=out, steps=recipe.sr_steps, checkpoint_every=100,
                                                       ema_decay=recipe.ema_decay, max_seconds=max_seconds,
                                                       description="phase B stage II"))
    state.ema.copy_to(unet)
    return state


def model_index(stage_two: bool) -> dict:
    """model_index.json of IFPipeline (stage I) or IFSuperResolutionPipeline (stage II), as diffusers writes it,
    plus genrt's call defaults."""
    none = [None, None]
    guidance, steps = CALL_DEFAULTS["stage_II" if stage_two else "stage_I"]
    index = {
        "_genrt_defaults": {"guidance_scale": guidance, "num_inference_steps": steps},
        "_class_name": "IFSuperResolutionPipeline" if stage_two else "IFPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": none, "requires_safety_checker": False, "safety_checker": none,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": none if stage_two else ["transformers", "T5EncoderModel"],
        "tokenizer": none if stage_two else ["transformers", "T5TokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"], "watermarker": none,
    }
    if stage_two:
        index["image_noising_scheduler"] = ["diffusers", "DDPMScheduler"]
    return dict(sorted(index.items()))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_folders(out: Path, encoder: nn.Module, tokenizer, base: IFUNet, sr: IFUNet) -> tuple[Path, Path]:
    """DIR/stage_I (IFPipeline: unet, text_encoder, tokenizer, scheduler) and DIR/stage_II (IFSuperResolutionPipeline:
    unet, scheduler, image_noising_scheduler; no text encoder: it shares stage I's), weights in float16."""
    folders = out / "stage_I", out / "stage_II"
    for folder in folders:
        if folder.exists():
            shutil.rmtree(folder)
    one, two = folders
    _write_json(one / "model_index.json", model_index(stage_two=False))
    save_if_unet(base, one / "unet", WEIGHT_DTYPE)
    copy.deepcopy(encoder).to(WEIGHT_DTYPE).save_pretrained(str(one / "text_encoder"))  # ties kept: one embedding
    tokenizer.save_pretrained(str(one / "tokenizer"))
    _write_json(two / "model_index.json", model_index(stage_two=True))
    save_if_unet(sr, two / "unet", WEIGHT_DTYPE)
    _write_json(two / "image_noising_scheduler" / "scheduler_config.json", NOISING_SCHEDULER)
    for folder in folders:
        _write_json(folder / "scheduler" / "scheduler_config.json", STAGE_SCHEDULERS[folder.name])
    return folders


def run(out: Path, recipe: RecipeConfig, minutes: float | None = None) -> dict:
    budget = Budget(minutes, recipe.seed)
    pool = render_pool(recipe)
    tokenizer = load_tokenizer()
    encoded = tokenizer(PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    tokens = (encoded.input_ids, encoded.attention_mask)
    schedule = NoiseSchedule(SchedulerConfig.from_dict(SCHEDULER).resolve("ddpm").schedule)
    torch.manual_seed(recipe.seed)
    model = TextAndBase(build_text_encoder(), IFUNet(STAGE_I))
    # Phase A may use ~65% of the time left, phase B the rest (each stops at its step count first).
    phase_a = train_base(model, pool, tokens, schedule, recipe, out / "phase_a", budget.left(0.65))
    model.eval().requires_grad_(False)
    with torch.no_grad():
        text = encode_all(model.encoder, *tokens)
    torch.manual_seed(recipe.seed + 1)
    sr = IFUNet(STAGE_II)
    phase_b = train_sr(sr, text, pool, schedule, recipe, out / "phase_b", budget.left(1.0))
    sr.eval().requires_grad_(False)
    save_folders(out, model.encoder, tokenizer, model.unet, sr)
    summary = {
        "phase_a": {"steps": phase_a.step, "steps_per_second": phase_a.steps_per_second,
                    "final_loss_mean50": float(np.mean(phase_a.losses[-50:]))},
        "phase_b": {"steps": phase_b.step, "steps_per_second": phase_b.steps_per_second,
                    "final_loss_mean50": float(np.mean(phase_b.losses[-50:]))},
        "recipe": dataclasses.asdict(recipe),
        "seconds": budget.seconds(),
        "text_encoder": "trained jointly with stage I from random initialisation, then frozen for stage II",
    }
    _write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return recipe_main(argv, "python -m genrt.sdk.train.recipes.imagen_shapes", __doc__.split("\n")[0],
                       RecipeConfig(), ("pool", "base_steps", "base_batch", "sr_steps", "sr_batch", "seed"),
                       "folder for checkpoints, loss curves and the folders", run)


if __name__ == "__main__":
    sys.exit(main())
