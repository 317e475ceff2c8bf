"""Imagen U-Nets: shapes of every tiny cascade stage, mask invariance, Efficient U-Net layout, input checks."""

import math

import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.imagen.config import ImagenUNetConfig, imagen_unet_config
from genrt.sdk.imagen.unet import ImagenUNet, masked_mean
from genrt.sdk.nn import ResnetBlock
from tests.conftest import relative_error


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: ImagenUNet(imagen_unet_config(name)).eval() for name in ("tiny-base-64", "tiny-sr-256", "tiny-sr-1024")}


def _inputs(config: ImagenUNetConfig, size: int, batch: int = 2, tokens: int = 5):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 3, size, size, generator=g)
    timestep = torch.tensor([3.0, 917.0][:batch])
    text = torch.randn(batch, tokens, config.text_dim, generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.int32)
    mask[1, 3:] = 0  # the second prompt is two tokens shorter
    extra = {}
    if config.low_res_cond:
        extra = {"low_res": torch.randn(batch, 3, size, size, generator=g), "noise_level": torch.tensor([0, 250][:batch])}
    return sample, timestep, text, mask, extra


@pytest.mark.parametrize(
    "name, size, out_channels",
    [("tiny-base-64", 64, 6), ("tiny-sr-256", 32, 3), ("tiny-sr-1024", 32, 3)],
)
def test_stage_output_shapes(models, name, size, out_channels):
    model = models[name]
    sample, timestep, text, mask, extra = _inputs(model.config, size)
    with torch.no_grad():
        out = model(sample, timestep, text, mask, **extra)
    assert out.shape == (2, out_channels, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, size", [("tiny-base-64", 16), ("tiny-sr-256", 16), ("tiny-sr-1024", 16)])
def test_padding_tokens_do_not_change_the_output(models, name, size):
    model = models[name]
    sample, timestep, text, mask, extra = _inputs(model.config, size)
    garbage = 100.0 * torch.randn(2, 7, model.config.text_dim)  # large values: any leak would show
    padded_text = torch.cat([text, garbage], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 7, dtype=mask.dtype)], dim=1)
    # Overwrite the already-masked tokens of prompt 1 as well.
    padded_text[1, 3:5] = -50.0
    with torch.no_grad():
        reference = model(sample, timestep, text, mask, **extra)
        padded = model(sample, timestep, padded_text, padded_mask, **extra)
        unmasked = model(sample, timestep, padded_text, torch.ones_like(padded_mask), **extra)
    assert relative_error(padded, reference) < 1e-5
    assert relative_error(unmasked, reference) > 1e-2  # the text does reach the output


def test_all_padding_prompt_is_well_defined(models):
    model = models["tiny-base-64"]
    sample, timestep, text, mask, _ = _inputs(model.config, 16)
    with torch.no_grad():
        out = model(sample, timestep, text, torch.zeros_like(mask))
        other = model(sample, timestep, torch.randn_like(text), torch.zeros_like(mask))
    assert torch.isfinite(out).all()
    assert relative_error(other, out) < 1e-6  # unconditional: the text content is irrelevant


def test_masked_mean_by_hand():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(masked_mean(tokens, torch.tensor([[True, True, False]])), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(masked_mean(tokens, torch.tensor([[False, False, False]])), torch.zeros(1, 2))


def test_efficient_unet_layout(models):
    """No residual block runs at the input resolution; skips and residual sums are scaled by 1/sqrt(2)."""
    model = models["tiny-sr-256"]
    config = model.config
    assert config.efficient and config.stride == 2 ** len(config.channel_mults)
    resolutions = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: resolutions.append(args[0].shape[-1]))
        for m in model.modules() if isinstance(m, ResnetBlock)
    ]
    sample, timestep, text, mask, extra = _inputs(config, 32)
    with torch.no_grad():
        model(sample, timestep, text, mask, **extra)
    for hook in hooks:
        hook.remove()
    assert max(resolutions) == 16 and min(resolutions) == 32 // 2 ** len(config.channel_mults)
    # More blocks at lower resolution: the counts per level are exactly the config's, down and up.
    assert [len(level.blocks) for level in model.down] == list(config.num_res_blocks)
    assert [len(level.blocks) for level in model.up] == list(reversed(config.num_res_blocks))
    assert all(level.skip_scale == pytest.approx(1 / math.sqrt(2)) for level in model.up)
    assert all(b.output_scale_factor == pytest.approx(math.sqrt(2)) for b in model.modules() if isinstance(b, ResnetBlock))
    # The base model is a classic U-Net: blocks at full resolution, no scaling.
    base = models["tiny-base-64"]
    assert base.config.stride == 2 ** (len(base.config.channel_mults) - 1)
    assert all(b.output_scale_factor == 1.0 for b in base.modules() if isinstance(b, ResnetBlock))


def test_sr_1024_has_no_self_attention(models):
    attentions = [m for m in models["tiny-sr-1024"].modules() if type(m).__name__ == "ImageTextAttention"]
    assert attentions and all(a.to_k is None and a.add_k_proj is not None for a in attentions)
    attentions = [m for m in models["tiny-sr-256"].modules() if type(m).__name__ == "ImageTextAttention"]
    assert attentions and all(a.to_k is not None for a in attentions)


def test_noise_level_conditions_the_sr_output(models):
    model = models["tiny-sr-256"]
    sample, timestep, text, mask, extra = _inputs(model.config, 16)
    with torch.no_grad():
        a = model(sample, timestep, text, mask, **extra)
        b = model(sample, timestep, text, mask, low_res=extra["low_res"], noise_level=extra["noise_level"] + 100)
    assert relative_error(a, b) > 1e-3


def test_input_checks(models):
    base, sr = models["tiny-base-64"], models["tiny-sr-256"]
    sample, timestep, text, mask, _ = _inputs(base.config, 16)
    with pytest.raises(InputError, match="multiples of 4"):
        base(sample[..., :14, :14], timestep, text, mask)
    with pytest.raises(InputError, match="text_embeddings"):
        base(sample, timestep, text[..., :8], mask)
    with pytest.raises(InputError, match="text_mask"):
        base(sample, timestep, text, mask[:, :3])
    with pytest.raises(InputError, match="SR stages only"):
        base(sample, timestep, text, mask, low_res=sample, noise_level=timestep.long())
    with pytest.raises(InputError, match="without `low_res`"):
        sr(sample, timestep, text, mask)
    with pytest.raises(InputError, match="multiples of 8"):
        sr(sample[..., :12, :12], timestep, text, mask, low_res=sample[..., :12, :12], noise_level=timestep.long())
    with pytest.raises(InputError, match="low_res"):
        sr(sample, timestep, text, mask, low_res=sample[..., :8, :8], noise_level=timestep.long())


def test_config_validation():
    fields = dict(imagen_unet_config("tiny-sr-1024").__dict__)
    with pytest.raises(ConfigError, match="num_res_blocks"):
        ImagenUNetConfig(**{**fields, "num_res_blocks": (1, 2)})
    with pytest.raises(ConfigError, match="subset"):
        ImagenUNetConfig(**{**fields, "cross_attention_levels": (2,), "attention_levels": (3,)})
    with pytest.raises(ConfigError, match="self_attention"):
        ImagenUNetConfig(**{**fields, "attention_levels": (2, 3)})
    with pytest.raises(ConfigError, match="imagen-base-64"):
        imagen_unet_config("imagen-base-128")


def test_paper_sizes_build():
    """The paper's cascade at full size (on the meta device): exact parameter counts of our layout.

    Paper (Saharia et al. 2022): base 2B, SR 64->256 600M, SR 256->1024 400M; config.py says where each
    size comes from and what the remaining difference is.
    """
    counts = {}
    for name in ("imagen-base-64", "imagen-sr-256", "imagen-sr-1024"):
        with torch.device("meta"):
            counts[name] = count_parameters(ImagenUNet(imagen_unet_config(name)))
    print(counts)
    assert counts == {"imagen-base-64": 1_715_960_838, "imagen-sr-256": 504_786_051, "imagen-sr-1024": 501_640_323}
