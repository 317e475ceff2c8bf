"""DeepFloyd IF U-Nets: parity with diffusers' UNet2DConditionModel (stage I and II), masks, loading."""

import dataclasses
import json

import pytest
import torch

from genrt.errors import CheckpointError, InputError
from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.imagen.checkpoint import if_unet_config_from_diffusers, load_if_unet
from genrt.sdk.imagen.config import IFUNetConfig, if_unet_config
from genrt.sdk.imagen.if_unet import IFUNet, masked_group_norm
from tests.conftest import relative_error

diffusers = pytest.importorskip("diffusers")


def diffusers_kwargs(c: IFUNetConfig) -> dict:
    """The diffusers UNet2DConditionModel arguments of an IF config (as in IF's unet/config.json)."""
    return dict(
        sample_size=c.sample_size, in_channels=c.in_channels, out_channels=c.out_channels,
        down_block_types=["SimpleCrossAttnDownBlock2D" if x else "ResnetDownsampleBlock2D" for x in c.cross_attention],
        up_block_types=["SimpleCrossAttnUpBlock2D" if x else "ResnetUpsampleBlock2D" for x in reversed(c.cross_attention)],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=list(c.block_out_channels),
        layers_per_block=list(c.layers_per_block), act_fn="gelu", attention_head_dim=c.attention_head_dim,
        cross_attention_dim=c.cross_attention_dim, encoder_hid_dim=c.encoder_hid_dim, encoder_hid_dim_type="text_proj",
        addition_embed_type="text", addition_embed_type_num_heads=c.addition_embed_type_num_heads,
        resnet_time_scale_shift="scale_shift", cross_attention_norm="group_norm",
        class_embed_type="timestep" if c.noise_level_conditioning else None,
        resnet_out_scale_factor=c.resnet_out_scale_factor, resnet_skip_time_act=c.resnet_skip_time_act,
        mid_block_scale_factor=c.mid_block_scale_factor, norm_num_groups=c.norm_num_groups, norm_eps=c.norm_eps,
    )


def _randomise(model: torch.nn.Module) -> None:
    """Non-trivial values everywhere (diffusers zero-initialises nothing here, but norms start at 1/0)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # norm scales around 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(p[0].numel(), 1) ** 0.5))


@pytest.fixture(scope="module", params=["tiny-if-stage1", "tiny-if-stage2", "tiny-if-stage1-groups16"])
def pair(request, tmp_path_factory):
    """(diffusers model, our model loaded from the diffusers folder through load_if_unet). The third has
    16 GroupNorm groups: diffusers' text norm (norm_cross) keeps 32 whatever norm_num_groups says."""
    torch.manual_seed(0)
    name, _, groups = request.param.partition("-groups")
    config = if_unet_config(name)
    if groups:
        config = dataclasses.replace(config, norm_num_groups=int(groups))
    reference = diffusers.UNet2DConditionModel(**diffusers_kwargs(config)).eval()
    _randomise(reference)
    folder = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(folder)
    return reference, load_if_unet(folder)


def _inputs(config: IFUNetConfig, size: int, tokens: int = 6):
    g = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 3, size, size, generator=g)
    timestep = torch.tensor([7.0, 640.0])
    text = torch.randn(2, tokens, config.encoder_hid_dim, generator=g)
    extra = {}
    if config.noise_level_conditioning:
        extra = {"low_res": torch.randn(2, 3, size, size, generator=g), "noise_level": torch.tensor([20, 250])}
    return sample, timestep, text, extra


def test_parity_with_diffusers(pair):
    reference, ours = pair
    config = ours.config
    sample, timestep, text, extra = _inputs(config, config.sample_size)
    with torch.no_grad():
        out = ours(sample, timestep, text, **extra)
        if config.noise_level_conditioning:
            expected = reference(
                torch.cat([sample, extra["low_res"]], 1), timestep, text, class_labels=extra["noise_level"]
            ).sample
        else:
            expected = reference(sample, timestep, text).sample
    assert out.shape == (2, 6, config.sample_size, config.sample_size)
    print(f"{config.in_channels}-channel IF U-Net vs diffusers: rel err {relative_error(out, expected):.2e}")
    assert relative_error(out, expected) < 1e-5
    # An all-ones mask is the unmasked computation.
    with torch.no_grad():
        masked = ours(sample, timestep, text, torch.ones(2, text.shape[1], dtype=torch.int32), **extra)
    assert relative_error(masked, expected) < 1e-5


def test_noise_level_changes_stage2_output():
    torch.manual_seed(0)
    ours = IFUNet(if_unet_config("tiny-if-stage2")).eval()
    sample, timestep, text, extra = _inputs(ours.config, 16)
    with torch.no_grad():
        a = ours(sample, timestep, text, **extra)
        b = ours(sample, timestep, text, low_res=extra["low_res"], noise_level=torch.tensor([900, 0]))
    assert relative_error(a, b) > 1e-3


def test_padding_tokens_do_not_change_the_output(pair):
    _, ours = pair
    sample, timestep, text, extra = _inputs(ours.config, 16, tokens=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    padded_text = torch.cat([text, 30.0 * torch.randn(2, 5, text.shape[2])], dim=1)
    padded_text[1, 2:4] = 9.0
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        reference = ours(sample, timestep, text, mask, **extra)
        padded = ours(sample, timestep, padded_text, padded_mask, **extra)
    assert relative_error(padded, reference) < 1e-5


def test_masked_group_norm_equals_group_norm_of_valid_tokens():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 16, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(1, 7, 16)
    mask = torch.tensor([[True, True, True, False, True, False, False]])
    out = masked_group_norm(x, mask, norm)
    valid = x[:, mask[0]]
    expected = norm(valid.transpose(1, 2)).transpose(1, 2)
    assert relative_error(out[:, mask[0]], expected) < 1e-6


@pytest.mark.parametrize("name, expected", [("if-stage1-xl", 4_304_695_110), ("if-stage2-l", 1_187_608_070)])
def test_released_sizes_match_diffusers(name, expected):
    """Parameter counts at real size, built on the meta device: ours equals diffusers' exactly."""
    config = if_unet_config(name)
    with torch.device("meta"):
        ours = count_parameters(IFUNet(config))
        theirs = count_parameters(diffusers.UNet2DConditionModel(**diffusers_kwargs(config)))
    assert ours == theirs == expected


def test_config_reader_and_errors(tmp_path):
    config = if_unet_config("tiny-if-stage2")
    kwargs = diffusers_kwargs(config)
    assert if_unet_config_from_diffusers(kwargs) == config
    with pytest.raises(CheckpointError, match="not a DeepFloyd IF U-Net"):
        if_unet_config_from_diffusers({**kwargs, "act_fn": "silu"})
    with pytest.raises(CheckpointError, match="upcast_attention"):
        if_unet_config_from_diffusers({**kwargs, "upcast_attention": True})
    with pytest.raises(CheckpointError, match="field.*some_new_option"):
        if_unet_config_from_diffusers({**kwargs, "some_new_option": 1})
    with pytest.raises(CheckpointError, match="CrossAttnDownBlock2D"):
        if_unet_config_from_diffusers({**kwargs, "down_block_types": ["CrossAttnDownBlock2D"] * 3})
    with pytest.raises(CheckpointError, match="no config.json"):
        load_if_unet(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(kwargs))
    with pytest.raises(CheckpointError, match="no weights"):
        load_if_unet(tmp_path)


def test_input_checks():
    model = IFUNet(if_unet_config("tiny-if-stage2"))
    sample, timestep, text, extra = _inputs(model.config, 16)
    with pytest.raises(InputError, match="multiples of 4"):
        model(sample[..., :14, :14], timestep, text, **extra)
    with pytest.raises(InputError, match="stage II needs"):
        model(sample, timestep, text)
    with pytest.raises(InputError, match="text_embeddings"):
        model(sample, timestep, text[..., :8], **extra)
