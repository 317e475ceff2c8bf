"""Model definitions: exact parameter counts of the released sizes, shapes and input checks."""

import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.ldm.autoencoder import AutoencoderKL, DiagonalGaussian
from genrt.sdk.ldm.config import get_config
from genrt.sdk.ldm.text_encoder import CLIPTextEncoder
from genrt.sdk.ldm.unet import UNet2DCondition
from tests.conftest import relative_error


@pytest.mark.parametrize(
    "name, unet, vae, text",
    [
        ("sd15", 859_520_964, 83_653_863, 123_060_480),  # CLIP ViT-L/14 text
        ("sd21", 865_910_724, 83_653_863, 340_387_840),  # OpenCLIP ViT-H text, 23 of 24 layers
    ],
)
def test_parameter_counts_of_released_models(name, unet, vae, text):
    config = get_config(name)
    with torch.device("meta"):
        assert count_parameters(UNet2DCondition(config.unet)) == unet
        assert count_parameters(AutoencoderKL(config.vae)) == vae
        assert count_parameters(CLIPTextEncoder(config.text_encoder)) == text


def test_registry():
    sd21 = get_config("sd21")
    assert sd21.prediction_type == "v_prediction" and sd21.unet.use_linear_projection
    assert [c // h for c, h in zip(sd21.unet.block_out_channels, sd21.unet.attention_heads)] == [64] * 4
    assert get_config("sd15").latent_scaling_factor == 0.18215 and get_config("sd15").latent_size == 64
    assert get_config("sd15").schedule_fields()["beta_schedule"] == "scaled_linear"
    with pytest.raises(ConfigError, match="sd15.*sd21.*tiny"):
        get_config("sd3")


@pytest.mark.parametrize("name", ["tiny", "tiny-sd2"])
def test_tiny_shapes_and_input_checks(name):
    torch.manual_seed(0)
    config = get_config(name)
    unet, vae = UNet2DCondition(config.unet), AutoencoderKL(config.vae)
    context = torch.randn(2, 77, config.unet.cross_attention_dim)
    out = unet(torch.randn(2, 4, 8, 12), torch.tensor([10.0, 999.0]), context)
    assert out.shape == (2, 4, 8, 12) and out.dtype == torch.float32
    assert unet(torch.randn(2, 4, 8, 8), 5, context).shape == (2, 4, 8, 8)  # scalar timestep broadcasts
    with pytest.raises(InputError, match="multiples of 2"):
        unet(torch.randn(2, 4, 7, 8), 5, context)
    with pytest.raises(InputError, match="encoder_hidden_states"):
        unet(torch.randn(2, 4, 8, 8), 5, context[..., :16])

    moments = vae.encode(torch.randn(1, 3, 16, 24))
    assert moments.shape == (1, 8, 8, 12)
    assert vae.decode(moments[:, :4]).shape == (1, 3, 16, 24)
    with pytest.raises(InputError, match="multiples of 2"):
        vae.encode(torch.randn(1, 3, 15, 16))
    with pytest.raises(InputError, match="latent"):
        vae.decode(torch.randn(1, 8, 8, 8))


def test_diagonal_gaussian_kl_matches_closed_form():
    torch.manual_seed(0)
    moments = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    posterior = DiagonalGaussian(moments)
    mean, logvar = moments[:, :4], moments[:, 4:]
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2, 3))
    assert relative_error(posterior.kl(), expected) < 1e-12
    noise = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert torch.equal(posterior.sample(noise), mean + (0.5 * logvar).exp() * noise)


def test_text_encoder_is_frozen_and_checks_ids():
    encoder = CLIPTextEncoder(get_config("tiny").text_encoder)
    assert not any(p.requires_grad for p in encoder.parameters())
    ids = torch.randint(0, 1000, (2, 77))
    assert encoder(ids).shape == (2, 77, 32)
    with pytest.raises(InputError, match="vocabulary"):
        encoder(torch.full((1, 77), 1000))
    with pytest.raises(InputError, match="T <= 77"):
        encoder(torch.zeros(1, 78, dtype=torch.long))
