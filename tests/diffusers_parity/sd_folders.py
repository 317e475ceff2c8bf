"""Tiny random-weight Stable Diffusion pipelines saved by diffusers itself, with the real tokenizers and
scheduler configs of SD 1.5 / 2.1 (tests/fixtures), shaped unlike genrt's own tiny presets.

``sd1``: 3 levels (16, 32, 32), 8 GroupNorm groups, 2 heads, 1x1-conv projections, CLIP quick_gelu text
of width 40, SD 1.5's tokenizer (pads with <|endoftext|>) and scheduler config.
``sd2``: 2 levels (32, 64), 16 groups, one head of 32 channels then two, linear projections,
``upcast_attention``, gelu text of width 48, SD 2.1's tokenizer (pads with "!") and its DDIM
v-prediction scheduler config with ``set_alpha_to_one: false``.
Both VAEs down-sample by 4 (three levels): 32x32 images, 8x8 latents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.sdk.ldm.conftest import randomise

FIXTURES = Path(__file__).parents[1] / "fixtures"
IMAGE_SIZE = 32


@dataclass(frozen=True)
class TinySD:
    """One architecture: the diffusers constructor arguments and the real folder it borrows from."""

    real: str  # tests/fixtures folder whose tokenizer and scheduler config are used
    unet: dict  # UNet2DConditionModel arguments
    vae: dict  # AutoencoderKL arguments
    text: dict  # CLIPTextConfig arguments


KINDS = {
    "sd1": TinySD(
        real="sd15",
        unet=dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, attention_head_dim=2,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=40),
        vae=dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
        text=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  hidden_act="quick_gelu"),
    ),
    "sd2": TinySD(
        real="sd21",
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16, attention_head_dim=(1, 2),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=16,
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
        text=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu"),
    ),
}


def real_scheduler_config(real: str) -> dict:
    return json.loads((FIXTURES / real / "scheduler" / "scheduler_config.json").read_text())


def build(kind: str, scheduler_class: str | None = None, seed: int = 0):
    """A diffusers StableDiffusionPipeline of ``kind`` with random weights; ``scheduler_class`` (a diffusers
    scheduler name) is made ``from_config`` of the real folder's scheduler config (default: its own class)."""
    import diffusers
    import transformers

    spec = KINDS[kind]
    unet = diffusers.UNet2DConditionModel(sample_size=IMAGE_SIZE // 4, **spec.unet)
    vae = diffusers.AutoencoderKL(latent_channels=4, sample_size=IMAGE_SIZE, **spec.vae)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(FIXTURES / spec.real / "tokenizer"))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **spec.text))
    for offset, module in enumerate((unet, vae, text)):
        randomise(module, seed + offset)
    config = real_scheduler_config(spec.real)
    scheduler = getattr(diffusers, scheduler_class or config["_class_name"]).from_config(config)
    return diffusers.StableDiffusionPipeline(vae=vae.eval(), text_encoder=text.eval(), tokenizer=tokenizer,
                                             unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)


def save(kind: str, folder: Path, scheduler_class: str | None = None) -> Path:
    """``build(kind, scheduler_class)`` saved with ``save_pretrained`` into ``folder``."""
    build(kind, scheduler_class).save_pretrained(str(folder))
    return folder


def export_ldm(folder: Path, out: Path, precision: str = "fp32") -> Path:
    """``genrt export ldm --checkpoint folder --precision ...`` into ``out`` (through the Python API)."""
    from genrt.export.folder import export_folder
    from genrt.export.ldm import plan
    from genrt.export.options import ExportOptions

    export_folder(plan(None, precision, ExportOptions(checkpoint=folder)), out)
    return out


def sample_image(seed: int = 0) -> np.ndarray:
    """A smooth uint8 (1, 32, 32, 3) picture for img2img."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 3)
    image = np.stack([np.sin(4 * x + 3 * y + p) for p in phases], axis=-1) * 0.5 + 0.5
    return np.round(image * 255).astype(np.uint8)[None]


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())
