"""Tiny random-weight DeepFloyd IF pipelines (stage I ``IFPipeline``, stage II ``IFSuperResolutionPipeline``)
saved by diffusers itself, with the real T5 v1.1 tokenizer (tests/fixtures/t5-v1_1) and IF's real
scheduler configs. The U-Nets are genrt's tiny IF layouts with 16 GroupNorm groups (diffusers' text norm
keeps 32), so a loader that reads norm_num_groups into the text norm fails here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from genrt.sdk.imagen.config import if_unet_config
from tests.sdk.imagen.test_if_unet import _randomise, diffusers_kwargs

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEXT_WIDTH = 48  # d_model of the tiny T5 = encoder_hid_dim of the tiny IF U-Nets
GROUPS = 16
# DeepFloyd/IF-I-XL-v1.0 and IF-II-L-v1.0 scheduler/scheduler_config.json (DDPMScheduler).
IF_SCHEDULER = dict(beta_end=0.02, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, clip_sample=True,
                    clip_sample_range=1.0, dynamic_thresholding_ratio=0.95, num_train_timesteps=1000,
                    prediction_type="epsilon", sample_max_value=1.5, thresholding=True, variance_type="learned_range")
# IF-II-L-v1.0 image_noising_scheduler/scheduler_config.json.
IF_NOISING_SCHEDULER = dict(beta_end=0.02, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, clip_sample=False,
                            num_train_timesteps=1000, prediction_type="epsilon", thresholding=False,
                            variance_type="fixed_small")


def t5_tokenizer():
    import transformers

    return transformers.T5TokenizerFast(tokenizer_file=str(FIXTURES / "t5-v1_1" / "tokenizer.json"),
                                        eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)


def _unet(name: str, seed: int):
    import diffusers

    torch.manual_seed(seed)
    config = dataclasses.replace(if_unet_config(name), norm_num_groups=GROUPS)
    unet = diffusers.UNet2DConditionModel(**diffusers_kwargs(config)).eval()
    _randomise(unet)
    return unet


def save_stage_one(folder: Path) -> Path:
    import diffusers
    import transformers

    torch.manual_seed(3)
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=32128, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)).eval()
    pipe = diffusers.IFPipeline(tokenizer=t5_tokenizer(), text_encoder=t5, unet=_unet("tiny-if-stage1", 1),
                                scheduler=diffusers.DDPMScheduler(**IF_SCHEDULER), safety_checker=None,
                                feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def save_stage_two(folder: Path) -> Path:
    import diffusers

    pipe = diffusers.IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=_unet("tiny-if-stage2", 2),
        scheduler=diffusers.DDPMScheduler(**IF_SCHEDULER),
        image_noising_scheduler=diffusers.DDPMScheduler(**IF_NOISING_SCHEDULER), safety_checker=None,
        feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder
