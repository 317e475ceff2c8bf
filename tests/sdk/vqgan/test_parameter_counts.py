"""Parameter counts of the named configs, built on the meta device (nothing allocated).

No public exact count exists for the taming VQGANs, so the autoencoder is checked against an
independent implementation (diffusers ``VQModel`` with the same layout, also on meta) and against
the closed-form count; the priors against minGPT's closed form and taming's published "1.4B".
"""

import pytest
import torch

from genrt.sdk.checkpoint import count_parameters
from genrt.sdk.vqgan.autoencoder import VQModel
from genrt.sdk.vqgan.config import PRIOR_CONFIGS, VQGAN_CONFIGS, VQGANConfig, prior_config, vqgan_config
from genrt.sdk.vqgan.prior import GPTPrior


def closed_form_vqgan(c: VQGANConfig) -> int:
    conv = lambda i, o, k: i * o * k * k + o
    norm = lambda ch: 2 * ch
    resnet = lambda i, o: norm(i) + conv(i, o, 3) + norm(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)
    attention = lambda ch: norm(ch) + 4 * (ch * ch + ch)
    widths = [c.ch * m for m in c.ch_mult]
    attn_levels = {i for i in range(len(widths)) if c.resolution // 2 ** i in c.attn_resolutions}
    mid = 2 * resnet(widths[-1], widths[-1]) + attention(widths[-1])
    total = conv(c.in_channels, c.ch, 3) + mid + norm(widths[-1]) + conv(widths[-1], c.z_channels, 3)  # encoder
    previous = c.ch
    for i, width in enumerate(widths):
        for j in range(c.num_res_blocks):
            total += resnet(previous if j == 0 else width, width) + (attention(width) if i in attn_levels else 0)
        previous = width
        total += conv(width, width, 3) if i < len(widths) - 1 else 0  # downsample
    total += conv(c.z_channels, widths[-1], 3) + mid + norm(widths[0]) + conv(widths[0], c.out_channels, 3)  # decoder
    previous = widths[-1]
    for i in reversed(range(len(widths))):
        for j in range(c.num_res_blocks + 1):
            total += resnet(previous if j == 0 else widths[i], widths[i]) + (attention(widths[i]) if i in attn_levels else 0)
        previous = widths[i]
        total += conv(widths[i], widths[i], 3) if i > 0 else 0  # upsample
    return total + conv(c.z_channels, c.embed_dim, 1) + conv(c.embed_dim, c.z_channels, 1) + c.n_embed * c.embed_dim


def closed_form_prior(name: str) -> int:
    c = prior_config(name)
    d = c.n_embd
    per_block = 4 * (d * d + d) + 2 * (2 * d) + (d * 4 * d + 4 * d) + (4 * d * d + d)  # attn, 2 LN, MLP
    return c.vocab_size * d + c.block_size * d + c.n_layer * per_block + 2 * d + d * c.vocab_size


def test_print_and_check_counts():
    with torch.device("meta"):
        vqgan = {name: count_parameters(VQModel(config)) for name, config in VQGAN_CONFIGS.items()}
        prior = {name: count_parameters(GPTPrior(config)) for name, config in PRIOR_CONFIGS.items()}
    for name in VQGAN_CONFIGS:
        print(f"VQGAN {name}: {vqgan[name]:,} parameters; GPT prior {name}: {prior[name]:,}")
        assert vqgan[name] == closed_form_vqgan(vqgan_config(name))
        assert prior[name] == closed_form_prior(name)
    assert vqgan["taming-f16-1024"] == 72_141_699  # 29.3M encoder + 42.4M decoder + 0.26M codebook
    assert vqgan["taming-f16-16384"] - vqgan["taming-f16-1024"] == (16384 - 1024) * 256  # only the codebook differs
    assert prior["taming-f16-1024"] == 304_932_864  # FacesHQ transformer (24 x 1024)
    assert round(prior["taming-f16-16384"] / 1e8) == 14  # taming's "1.4B" class-conditional ImageNet transformer


def test_vqgan_count_matches_diffusers_vqmodel():
    diffusers = pytest.importorskip("diffusers")
    config = vqgan_config("taming-f16-16384")
    widths = tuple(config.ch * m for m in config.ch_mult)
    with torch.device("meta"):
        reference = diffusers.VQModel(
            block_out_channels=widths, layers_per_block=config.num_res_blocks, latent_channels=config.z_channels,
            vq_embed_dim=config.embed_dim, num_vq_embeddings=config.n_embed, sample_size=config.resolution,
            down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
        )
        ours = VQModel(config)
    assert count_parameters(ours) == count_parameters(reference)
    assert count_parameters(ours.encoder) == count_parameters(reference.encoder)
