"""Loading diffusers folders and original single files: parity with diffusers/transformers on random
weights (SD1-like and SD2-like), round trips, and the errors for bad checkpoints."""

import json

import pytest
import torch

from genrt.errors import CheckpointError
from genrt.sdk.checkpoint import read_state_dict, save_safetensors
from genrt.sdk.ldm import original_format as orig
from genrt.sdk.ldm.autoencoder import AutoencoderKL
from genrt.sdk.ldm.checkpoint import (from_pretrained, load_original, original_state_dict, save_original,
                                      save_pretrained)
from genrt.sdk.ldm.config import get_config
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.unet import UNet2DCondition
from tests.conftest import relative_error

PARITY = 1e-5


def _inputs(config):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    timestep = torch.tensor([3.0, 917.0])
    context = torch.randn(2, 77, config.unet.cross_attention_dim, generator=generator)
    image = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    ids = torch.randint(0, config.text_encoder.vocab_size, (2, 77), generator=generator)
    return latents, timestep, context, image, ids


def _outputs(model: LatentDiffusion, inputs) -> dict[str, torch.Tensor]:
    latents, timestep, context, image, ids = inputs
    with torch.no_grad():
        return {
            "unet": model.unet(latents, timestep, context),
            "moments": model.vae.encode(image),
            "decoded": model.vae.decode(latents),
            "text": model.text_encoder(ids),
        }


@pytest.fixture(scope="module")
def loaded(diffusers_pipeline):
    name, folder, reference = diffusers_pipeline
    return name, folder, reference, from_pretrained(folder)


def test_pipeline_folder_matches_diffusers(loaded):
    name, folder, (unet, vae, text), model = loaded
    config = get_config(name)
    assert isinstance(model, LatentDiffusion)
    assert model.config.unet == config.unet and model.config.vae == config.vae
    assert model.config.text_encoder == config.text_encoder
    assert model.config.prediction_type == config.prediction_type and model.config.image_size == config.image_size
    assert model.tokenizer is not None and model.tokenizer("he").input_ids == [0, 515 - 1, 2]

    inputs = _inputs(config)
    latents, timestep, context, image, ids = inputs
    ours = _outputs(model, inputs)
    with torch.no_grad():
        expected = {
            "unet": unet(latents, timestep, encoder_hidden_states=context).sample,
            "moments": vae.encode(image).latent_dist.parameters,
            "decoded": vae.decode(latents).sample,
            "text": text(ids).last_hidden_state,
        }
    for key, value in expected.items():
        assert ours[key].shape == value.shape and ours[key].dtype == torch.float32, key
        assert relative_error(ours[key], value) < PARITY, key


def test_component_folder_loads_alone(loaded):
    name, folder, (unet, _, _), model = loaded
    component = from_pretrained(folder / "unet")
    assert isinstance(component, UNet2DCondition)
    expected = unet.state_dict()
    assert component.state_dict().keys() == expected.keys()
    for key, value in component.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_original_single_file_round_trip(loaded, tmp_path):
    name, _, _, model = loaded
    path = tmp_path / "model.safetensors"
    save_original(model, path)
    state = read_state_dict(path)
    openclip = name == "tiny-sd2"
    # The layouts of the original files: openaimodel U-Net, taming VAE with conv attention, CLIP / OpenCLIP.
    assert "model.diffusion_model.input_blocks.0.0.weight" in state
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in state
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "first_stage_model.decoder.up.0.block.1.conv1.weight" in state
    if openclip:
        fused = state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
        assert fused.shape == (3 * 32, 32)
    else:
        assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in state

    reloaded = from_pretrained(path, config=name)
    inputs = _inputs(model.config)
    for key, value in _outputs(model, inputs).items():
        assert torch.equal(_outputs(reloaded, inputs)[key], value), key


def test_original_file_with_training_extras_and_detection(tmp_path):
    """Unused keys of real files (schedule buffers, EMA, a 24th OpenCLIP layer, text projection) are
    dropped; without a config the family is detected from the text-encoder layout."""
    torch.manual_seed(0)
    model = LatentDiffusion(get_config("tiny-sd2"))
    state = original_state_dict(model)
    state["alphas_cumprod"] = torch.rand(1000)
    state["model_ema.decay"] = torch.tensor(0.9999)
    extra_layer = {k.replace("resblocks.1.", "resblocks.2."): v for k, v in state.items() if "resblocks.1." in k}
    state.update(extra_layer)
    state["cond_stage_model.model.text_projection"] = torch.randn(32, 32)
    state["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "sd2.ckpt"
    torch.save({"state_dict": state}, path)
    reloaded = load_original(path, config="tiny-sd2", prediction_type="epsilon")
    assert reloaded.config.prediction_type == "epsilon"
    ids = torch.randint(0, 1000, (1, 77))
    assert torch.equal(reloaded.text_encoder(ids), model.text_encoder(ids))
    # No config: an OpenCLIP file is taken as SD 2.1, whose sizes this tiny file does not fit.
    with pytest.raises(CheckpointError, match=r"sd2.ckpt \(U-Net.*shape mismatches"):
        load_original(path)


def test_save_pretrained_round_trip(loaded, tmp_path):
    name, _, _, model = loaded
    save_pretrained(model, tmp_path / "ours")
    index = json.loads((tmp_path / "ours" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    reloaded = from_pretrained(tmp_path / "ours")
    assert reloaded.config.replace(name=model.config.name) == model.config
    inputs = _inputs(model.config)
    for key, value in _outputs(model, inputs).items():
        assert torch.equal(_outputs(reloaded, inputs)[key], value), key


def test_save_pretrained_is_readable_by_diffusers(tmp_path):
    import diffusers
    import transformers

    torch.manual_seed(0)
    model = LatentDiffusion(get_config("tiny-sd2"))
    save_pretrained(model, tmp_path)
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(tmp_path / "unet")).eval()
    latents, timestep, context = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = unet(latents, timestep, encoder_hidden_states=context).sample
        assert relative_error(model.unet(latents, timestep, context), expected) < PARITY
    text = transformers.CLIPTextModel.from_pretrained(str(tmp_path / "text_encoder")).eval()
    ids = torch.randint(0, 1000, (1, 77))
    with torch.no_grad():
        assert relative_error(model.text_encoder(ids), text(ids).last_hidden_state) < PARITY
    scheduler = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / "scheduler"))
    assert scheduler.config.prediction_type == "v_prediction"


def test_errors_name_the_file_and_keys(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="neither model_index.json nor config.json"):
        from_pretrained(tmp_path)

    other_family = tmp_path / "vqgan.safetensors"
    save_safetensors({"encoder.conv_in.weight": torch.zeros(2, 3, 3, 3)}, other_family)
    with pytest.raises(CheckpointError, match="vqgan.safetensors is not a Stable Diffusion"):
        from_pretrained(other_family)

    torch.manual_seed(0)
    model = LatentDiffusion(get_config("tiny"))
    state = original_state_dict(model)
    del state["model.diffusion_model.out.2.weight"]
    state["model.diffusion_model.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_safetensors(state, broken)
    with pytest.raises(CheckpointError, match=r"broken.safetensors \(U-Net.*1 missing keys: conv_out.weight; "
                                              r"1 unexpected keys: model.diffusion_model.extra.weight"):
        from_pretrained(broken, config="tiny")

    component = tmp_path / "vae"
    component.mkdir()
    (component / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    with pytest.raises(CheckpointError, match="'VQModel' is not part of Stable Diffusion"):
        from_pretrained(component)
    (component / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "block_out_channels": [32],
                                                       "down_block_types": ["DownEncoderBlock2D"],
                                                       "up_block_types": ["UpDecoderBlock2D"]}))
    with pytest.raises(CheckpointError, match="no weights in"):
        from_pretrained(component)
    save_safetensors(AutoencoderKL(get_config("tiny").vae).state_dict(), component / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors does not fit AutoencoderKL.*"
                                              "shape mismatches"):
        from_pretrained(component)
    unet_config = {"_class_name": "UNet2DConditionModel", "block_out_channels": [32],
                   "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                   "addition_embed_type": "text_time"}
    (component / "config.json").write_text(json.dumps(unet_config))
    with pytest.raises(CheckpointError, match="addition_embed_type='text_time' is not supported"):
        from_pretrained(component)


def test_key_maps_are_bijective_for_released_sizes():
    """Every U-Net / VAE key of SD 1.5 and SD 2.1 maps to a distinct original key (counted on meta)."""
    for name in ("sd15", "sd21"):
        config = get_config(name)
        with torch.device("meta"):
            unet_keys = UNet2DCondition(config.unet).state_dict().keys()
            vae_keys = AutoencoderKL(config.vae).state_dict().keys()
        unet_map = orig.unet_key_map(config.unet, unet_keys)
        vae_map = orig.vae_key_map(config.vae, vae_keys)
        assert len(set(unet_map.values())) == len(unet_keys) == 686
        assert len(set(vae_map.values())) == len(vae_keys) == 248
        assert unet_map["up_blocks.1.upsamplers.0.conv.weight"] == "model.diffusion_model.output_blocks.5.2.conv.weight"
        assert unet_map["down_blocks.3.resnets.1.conv2.weight"] == \
            "model.diffusion_model.input_blocks.11.0.out_layers.3.weight"
        assert vae_map["decoder.up_blocks.0.resnets.2.norm1.weight"] == \
            "first_stage_model.decoder.up.3.block.2.norm1.weight"
