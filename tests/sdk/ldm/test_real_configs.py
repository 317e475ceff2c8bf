"""The real config.json files of SD 1.5, 2.1 and 2.1-base (tests/fixtures): read as diffusers reads them,
real-size models on the meta device have the public parameter counts, and unknown fields are refused."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.ldm import diffusers_format as fmt
from genrt.sdk.ldm.autoencoder import AutoencoderKL
from genrt.sdk.ldm.config import get_config
from genrt.sdk.ldm.text_encoder import CLIPTextEncoder
from genrt.sdk.ldm.unet import UNet2DCondition

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _read(folder: str, component: str) -> tuple[dict, Path]:
    path = FIXTURES / folder / component / "config.json"
    return json.loads(path.read_text()), path


@pytest.mark.parametrize("folder, unet, text", [
    ("sd15", 859_520_964, 123_060_480),  # CLIP ViT-L/14 text
    ("sd21", 865_910_724, 340_387_840),  # OpenCLIP ViT-H text, 23 of 24 layers
    ("sd21base", 865_910_724, 340_387_840),
])
def test_real_configs_build_the_public_parameter_counts(folder, unet, text):
    unet_config = fmt.unet_config_from_diffusers(*_read(folder, "unet"))
    vae_config = fmt.vae_config_from_diffusers(*_read(folder, "vae"))
    text_config = fmt.text_config_from_transformers(*_read(folder, "text_encoder"))
    with torch.device("meta"):
        assert count_parameters(UNet2DCondition(unet_config)) == unet
        assert count_parameters(AutoencoderKL(vae_config)) == 83_653_863
        assert count_parameters(CLIPTextEncoder(text_config)) == text


@pytest.mark.parametrize("folder, preset", [("sd15", "sd15"), ("sd21", "sd21")])
def test_registry_presets_equal_the_real_configs(folder, preset):
    config = get_config(preset)
    assert fmt.unet_config_from_diffusers(*_read(folder, "unet")) == config.unet
    assert fmt.vae_config_from_diffusers(*_read(folder, "vae")) == config.vae
    text = fmt.text_config_from_transformers(*_read(folder, "text_encoder"))
    # The text_encoder/config.json files keep transformers' placeholder ids (bos 0, eos 2, pad 1); the
    # tokenizers' are 49406 / 49407 / (SD 1.x: 49407, SD 2.x: "!" = 0). They only pick the pooled token,
    # which Stable Diffusion does not use; the runtime pads with the tokenizer's id.
    special = {name: getattr(config.text_encoder, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    assert dataclasses.replace(text, **special) == config.text_encoder


def test_upcast_attention_is_read():
    assert fmt.unet_config_from_diffusers(*_read("sd21", "unet")).upcast_attention
    assert not fmt.unet_config_from_diffusers(*_read("sd21base", "unet")).upcast_attention


@pytest.mark.parametrize("component, field, value", [
    ("unet", "addition_embed_type", "text_time"),  # an implemented field with another value
    ("unet", "attention_type", "gated"),
    ("unet", "some_future_option", 1),  # a field genrt does not know
    ("vae", "latents_mean", [0.0] * 4),
    ("vae", "norm_type", "spatial"),
])
def test_fields_genrt_does_not_implement_are_refused_by_name(component, field, value):
    config, path = _read("sd15", component)
    read = fmt.unet_config_from_diffusers if component == "unet" else fmt.vae_config_from_diffusers
    with pytest.raises(CheckpointError, match=field):
        read({**config, field: value}, path)
