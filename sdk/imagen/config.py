"""Configs of the Imagen cascade: our Imagen / Efficient U-Net, DeepFloyd IF U-Nets, and the cascade.

Three registries, all frozen dataclasses:

- ``IMAGEN_UNETS``: Imagen-style U-Nets (:class:`ImagenUNetConfig`, built by ``genrt.sdk.imagen.unet``):
  the paper's cascade (``imagen-base-64``, ``imagen-sr-256``, ``imagen-sr-1024``; Saharia et al. 2022,
  App. F) and tiny paper-shaped stand-ins for tests.
- ``IF_UNETS``: DeepFloyd IF U-Nets in the diffusers ``UNet2DConditionModel`` layout
  (:class:`IFUNetConfig`, built by ``genrt.sdk.imagen.if_unet``) at their published sizes, plus tiny ones.
- ``CASCADES``: which U-Nets run at which resolution (:class:`CascadeConfig`).
- ``TEXT_ENCODERS``: the frozen T5 encoders (:class:`T5EncoderConfig`, built by ``genrt.sdk.imagen.text_encoder``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from genrt.errors import ConfigError
from genrt.sdk.registry import lookup

# 1/sqrt(2): the Efficient U-Net's scale on skip connections (Saharia et al. 2022, App. B).
SKIP_SCALE_EFFICIENT = 1.0 / math.sqrt(2.0)


@dataclass(frozen=True)
class ImagenUNetConfig:
    """An Imagen text-conditioned U-Net (base 64x64 or super-resolution)."""

    channels: int  # width of level 0 (model_channels); the time embedding is 4x this
    channel_mults: tuple[int, ...]  # width of level i = channels * channel_mults[i]; one level per entry
    num_res_blocks: tuple[int, ...]  # residual blocks per level (Efficient U-Net: more at low resolution)
    attention_levels: tuple[int, ...]  # levels (0 = highest resolution) that end with an attention block
    cross_attention_levels: tuple[int, ...]  # subset of attention_levels whose attention also sees the text
    self_attention: bool  # attention keys include the image tokens (False: text cross-attention only, SR-1024)
    text_dim: int  # width D of the frozen text encoder's embeddings (T5-XXL: 4096)
    cond_dim: int  # width the text tokens are projected to before cross-attention and pooling
    heads: int  # attention heads
    head_dim: int  # width of one attention head
    scale_shift: bool  # time embedding modulates the second GroupNorm as norm(h) * (1 + s) + b
    skip_scale: float  # multiplier on U-Net skips and residual sums: 1/sqrt(2) (Efficient U-Net) or 1.0
    low_res_cond: bool  # super-resolution stage: concatenates the upsampled low-res image, embeds the noise level
    efficient: bool  # Efficient U-Net: downsample before the blocks in the down path, upsample after in the up path
    image_size: int  # training resolution of the output (the U-Net itself accepts any multiple of its stride)
    in_channels: int = 3  # channels of the noisy image (the low-res image adds as many again for SR stages)
    out_channels: int = 3  # 3 (epsilon / v) or 6 (epsilon + learned variance range)
    groups: int = 32  # GroupNorm groups
    dropout: float = 0.0  # dropout inside residual blocks

    def __post_init__(self):
        levels = len(self.channel_mults)
        if len(self.num_res_blocks) != levels:
            raise ConfigError(
                f"num_res_blocks has {len(self.num_res_blocks)} entries for {levels} levels",
                fix="give one residual-block count per entry of channel_mults",
            )
        for name in ("attention_levels", "cross_attention_levels"):
            bad = [level for level in getattr(self, name) if not 0 <= level < levels]
            if bad:
                raise ConfigError(f"{name} {bad} outside 0..{levels - 1}", fix="use level indices of channel_mults")
        if not set(self.cross_attention_levels) <= set(self.attention_levels):
            raise ConfigError(
                "cross_attention_levels must be a subset of attention_levels",
                fix="add the cross-attention levels to attention_levels",
            )
        if not self.self_attention and set(self.attention_levels) != set(self.cross_attention_levels):
            raise ConfigError(
                "without self_attention an attention level without text has no keys",
                fix="set cross_attention_levels == attention_levels, or self_attention=True",
            )
        widths = [self.channels * m for m in self.channel_mults]
        if any(w % self.groups for w in widths):
            raise ConfigError(f"level widths {widths} are not multiples of groups={self.groups}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level."""
        return tuple(self.channels * m for m in self.channel_mults)

    @property
    def time_dim(self) -> int:
        """Width of the time (+ pooled text + noise level) embedding."""
        return 4 * self.channels

    @property
    def stride(self) -> int:
        """H and W must be multiples of this."""
        levels = len(self.channel_mults)
        return 2 ** (levels if self.efficient else levels - 1)


@dataclass(frozen=True)
class IFUNetConfig:
    """A DeepFloyd IF U-Net, as diffusers' ``UNet2DConditionModel`` is configured for IF.

    Level i is a ``SimpleCrossAttn{Down,Up}Block2D`` when ``cross_attention[i]`` (residual blocks, each
    followed by attention over [text; pixels] with added K/V projections), else a
    ``Resnet{Downsample,Upsample}Block2D``; resampling is done by residual blocks with avg-pool/nearest.
    """

    block_out_channels: tuple[int, ...]  # channels per level
    layers_per_block: tuple[int, ...]  # residual blocks per down level (up levels have one more)
    cross_attention: tuple[bool, ...]  # per level: SimpleCrossAttn block (True) or plain Resnet block (False)
    in_channels: int  # 3 (stage I) or 6 (stage II: noisy image + upsampled low-res image)
    out_channels: int  # 6: epsilon and the learned variance range
    attention_head_dim: int  # width of one attention head (heads = channels // attention_head_dim)
    cross_attention_dim: int  # width of the text tokens inside the U-Net (encoder_hid_proj output)
    encoder_hid_dim: int  # width of the T5 embeddings (4096 for T5-v1.1-XXL)
    addition_embed_type_num_heads: int  # heads of the attention pooling of the text into the time embedding
    resnet_out_scale_factor: float  # residual sums are divided by this (1.0 stage I, sqrt(2) stage II)
    resnet_skip_time_act: bool  # skip the nonlinearity on the time embedding inside residual blocks (stage II)
    mid_block_scale_factor: float  # output_scale_factor of the mid-block residual blocks
    noise_level_conditioning: bool  # stage II: class_embedding "timestep" embeds the augmentation noise level
    sample_size: int  # training resolution (64 stage I, 256 stage II)
    norm_num_groups: int = 32  # GroupNorm groups of the residual blocks and pixel attention norms (text norm: 32)
    norm_eps: float = 1e-5  # GroupNorm epsilon of residual blocks and the output norm
    act: str = "gelu"  # nonlinearity of residual blocks and the time embedding MLP

    def __post_init__(self):
        n = len(self.block_out_channels)
        if len(self.layers_per_block) != n or len(self.cross_attention) != n:
            raise ConfigError(
                "block_out_channels, layers_per_block and cross_attention need one entry per level",
                fix="give all three the same length",
            )
        attended = [c for c, cross in zip(self.block_out_channels, self.cross_attention) if cross]
        if any(c % self.attention_head_dim for c in attended + [self.block_out_channels[-1]]):
            raise ConfigError(
                f"attention levels of {self.block_out_channels} are not multiples of head dim {self.attention_head_dim}"
            )

    @property
    def time_dim(self) -> int:
        """Width of the time embedding (4x the first level)."""
        return 4 * self.block_out_channels[0]


@dataclass(frozen=True)
class T5EncoderConfig:
    """A T5 v1.1 encoder (gated-GELU feed-forward, relative position buckets), as ``transformers.T5Config``."""

    vocab_size: int  # token vocabulary (T5 v1.1: 32128)
    d_model: int  # width D of the output embeddings (XXL: 4096)
    d_kv: int  # width of one attention head
    d_ff: int  # inner width of the feed-forward layers
    num_layers: int  # encoder layers
    num_heads: int  # attention heads
    max_length: int  # tokens per prompt the U-Nets were trained with (IF: 77); prompts are padded to this
    relative_attention_num_buckets: int = 32  # relative-position buckets of the attention bias
    relative_attention_max_distance: int = 128  # distance beyond which positions share the last bucket
    feed_forward_proj: str = "gated-gelu"  # v1.1 feed-forward: GELU(x W0) * (x W1)
    layer_norm_epsilon: float = 1e-6  # epsilon of the RMS layer norms


@dataclass(frozen=True)
class CascadeConfig:
    """Which U-Nets make up a text-to-image cascade and at which resolutions they run."""

    base: str  # name in IMAGEN_UNETS of the 64x64 text-to-image U-Net
    super_resolution: tuple[str, ...]  # names in IMAGEN_UNETS of the SR U-Nets, in order
    resolutions: tuple[int, ...]  # output size of each stage, base first (e.g. 64, 256, 1024)
    guidance_scales: tuple[float, ...]  # classifier-free guidance scale per stage
    sr_noise_level: int  # augmentation level (0..num_train_timesteps-1) applied to the low-res input at inference
    threshold_percentile: float = 0.995  # dynamic thresholding percentile p (Imagen: 99.5%)
    beta_schedule: str = "cosine"  # noise schedule of every stage (and of the augmentation), 1000 steps

    def __post_init__(self):
        stages = 1 + len(self.super_resolution)
        if len(self.resolutions) != stages or len(self.guidance_scales) != stages:
            raise ConfigError(
                f"a cascade of {stages} stages needs {stages} resolutions and guidance scales",
                fix="give one resolution and one guidance scale per stage, base first",
            )


# The trunk both Efficient U-Net SR stages share (lucidrains/imagen-pytorch SRUnet256 / SRUnet1024)
_EFFICIENT_SR = dict(
    channels=128, channel_mults=(1, 2, 4, 8), num_res_blocks=(2, 4, 8, 8), attention_levels=(3,),
    cross_attention_levels=(3,), text_dim=4096, cond_dim=512, heads=8, head_dim=64, scale_shift=True,
    skip_scale=SKIP_SCALE_EFFICIENT, low_res_cond=True, efficient=True,
)
# ... and what the tiny SR stages share (tests)
_TINY_SR = dict(text_dim=32, cond_dim=32, heads=2, head_dim=16, scale_shift=True, skip_scale=SKIP_SCALE_EFFICIENT,
                low_res_cond=True, efficient=True)


IMAGEN_UNETS: dict[str, ImagenUNetConfig] = {
    # Imagen base 64x64 (paper: 2B). Width 512, mults 1,2,3,4, attention + text cross-attention at 32,16,8 and
    # 8 heads of 64 as lucidrains/imagen-pytorch BaseUnet64 ("configs lining up with ... appendix of paper");
    # cond_dim 2048 as NVIDIA NeMo examples/multimodal/text_to_image/imagen/conf/base64-2b.yaml (its docs: 2,100M).
    # Those references' 3 res blocks are ADM-style (down 3, up 3 + 1, every up block takes a skip); our layout runs
    # the same count down and up, so 4 per level gives the reference's 4 up blocks (and lucidrains/imagen-pytorch
    # issue #52: BaseUnet64 builds 1.3B vs the paper's 2B, "try num_resnet_blocks 4"). 1,715,960,838 parameters
    # (3 blocks, cond_dim 512: 1,370,365,446); the remaining ~14% to 2B is attention after every block at 32,16,8
    # and skip concatenation into every up block in the reference layout, which this U-Net has no option for.
    "imagen-base-64": ImagenUNetConfig(
        channels=512, channel_mults=(1, 2, 3, 4), num_res_blocks=(4, 4, 4, 4),
        attention_levels=(1, 2, 3), cross_attention_levels=(1, 2, 3), self_attention=True,
        text_dim=4096, cond_dim=2048, heads=8, head_dim=64, scale_shift=True, skip_scale=1.0,
        low_res_cond=False, efficient=False, image_size=64, out_channels=6,
    ),
    # Efficient U-Net 64->256 (paper: 600M) as lucidrains/imagen-pytorch SRUnet256: 128 channels, mults 1,2,4,8,
    # blocks 2,4,8,8, self + cross-attention at the lowest resolution only. 504,786,051 parameters (-16%).
    "imagen-sr-256": ImagenUNetConfig(**_EFFICIENT_SR, self_attention=True, image_size=256),
    # Efficient U-Net 256->1024 (paper: 400M; trained on 256 crops) as lucidrains/imagen-pytorch SRUnet1024: same
    # trunk as SR-256, no self-attention, text cross-attention at the lowest resolution. 501,640,323 parameters
    # (+25%): the paper's 600M/400M split is not reproducible from the published per-level hyperparameters, which
    # both SR stages share; only the attention differs (and costs ~1M here).
    "imagen-sr-1024": ImagenUNetConfig(**_EFFICIENT_SR, self_attention=False, image_size=1024),
    # Tiny paper-shaped cascade for tests: same structure, 32 channels, a 32-wide text encoder.
    "tiny-base-64": ImagenUNetConfig(
        channels=32, channel_mults=(1, 2, 2), num_res_blocks=(1, 1, 2),
        attention_levels=(1, 2), cross_attention_levels=(1, 2), self_attention=True,
        text_dim=32, cond_dim=32, heads=2, head_dim=16, scale_shift=True, skip_scale=1.0,
        low_res_cond=False, efficient=False, image_size=64, out_channels=6,
    ),
    "tiny-sr-256": ImagenUNetConfig(
        **_TINY_SR, channels=32, channel_mults=(1, 1, 2), num_res_blocks=(1, 1, 2), attention_levels=(2,),
        cross_attention_levels=(2,), self_attention=True, image_size=256,
    ),
    "tiny-sr-1024": ImagenUNetConfig(
        **_TINY_SR, channels=16, channel_mults=(1, 1, 2, 2), num_res_blocks=(1, 1, 1, 2), attention_levels=(3,),
        cross_attention_levels=(3,), self_attention=False, image_size=1024, groups=8,
    ),
}

# Stage II: sqrt(2) as diffusers stores it in the IF-II config.json.
_IF_II_SCALE = 1.4142271248762552

# IF-I-L (900M), IF-I-M (400M) and IF-II-M (450M; sizes from the deep-floyd/IF README and the model cards) are
# not registered: their unet/config.json values were not found in a citable source; read them with
# genrt.sdk.imagen.checkpoint.if_unet_config_from_diffusers from the downloaded folder instead.
IF_UNETS: dict[str, IFUNetConfig] = {
    # DeepFloyd/IF-I-XL-v1.0 unet/config.json (4.3B).
    "if-stage1-xl": IFUNetConfig(
        block_out_channels=(704, 1408, 2112, 2816), layers_per_block=(3, 3, 3, 3),
        cross_attention=(False, True, True, True), in_channels=3, out_channels=6, attention_head_dim=64,
        cross_attention_dim=2816, encoder_hid_dim=4096, addition_embed_type_num_heads=64,
        resnet_out_scale_factor=1.0, resnet_skip_time_act=False, mid_block_scale_factor=1.0,
        noise_level_conditioning=False, sample_size=64,
    ),
    # DeepFloyd/IF-II-L-v1.0 unet/config.json (1.2B).
    "if-stage2-l": IFUNetConfig(
        block_out_channels=(160, 320, 640, 960, 1280), layers_per_block=(2, 2, 3, 5, 5),
        cross_attention=(False, False, False, True, True), in_channels=6, out_channels=6, attention_head_dim=64,
        cross_attention_dim=1280, encoder_hid_dim=4096, addition_embed_type_num_heads=64,
        resnet_out_scale_factor=_IF_II_SCALE, resnet_skip_time_act=True, mid_block_scale_factor=_IF_II_SCALE,
        noise_level_conditioning=True, sample_size=256,
    ),
    # Tiny IF-shaped U-Nets for the diffusers parity tests.
    "tiny-if-stage1": IFUNetConfig(
        block_out_channels=(32, 64), layers_per_block=(1, 2), cross_attention=(False, True),
        in_channels=3, out_channels=6, attention_head_dim=16, cross_attention_dim=64, encoder_hid_dim=48,
        addition_embed_type_num_heads=4, resnet_out_scale_factor=1.0, resnet_skip_time_act=False,
        mid_block_scale_factor=1.0, noise_level_conditioning=False, sample_size=16,
    ),
    "tiny-if-stage2": IFUNetConfig(
        block_out_channels=(32, 32, 64), layers_per_block=(1, 1, 2), cross_attention=(False, False, True),
        in_channels=6, out_channels=6, attention_head_dim=16, cross_attention_dim=64, encoder_hid_dim=48,
        addition_embed_type_num_heads=4, resnet_out_scale_factor=_IF_II_SCALE, resnet_skip_time_act=True,
        mid_block_scale_factor=_IF_II_SCALE, noise_level_conditioning=True, sample_size=32,
    ),
}

CASCADES: dict[str, CascadeConfig] = {
    # Imagen: 64 -> 256 -> 1024, guidance and aug level as in the paper's sampling setup.
    "imagen": CascadeConfig(
        base="imagen-base-64", super_resolution=("imagen-sr-256", "imagen-sr-1024"),
        resolutions=(64, 256, 1024), guidance_scales=(7.0, 4.0, 4.0), sr_noise_level=250,
    ),
    "tiny": CascadeConfig(
        base="tiny-base-64", super_resolution=("tiny-sr-256", "tiny-sr-1024"),
        resolutions=(64, 256, 1024), guidance_scales=(7.0, 4.0, 4.0), sr_noise_level=250,
    ),
}


TEXT_ENCODERS: dict[str, T5EncoderConfig] = {
    # google/t5-v1_1-xxl encoder (4.76B), as used by Imagen and DeepFloyd IF (77 tokens in IF).
    "t5-v1_1-xxl": T5EncoderConfig(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, max_length=77,
    ),
    # Tiny T5 whose width matches the tiny Imagen U-Nets' text_dim.
    "tiny-t5": T5EncoderConfig(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, max_length=16),
}


def imagen_unet_config(name: str) -> ImagenUNetConfig:
    """The registered Imagen U-Net config called ``name``."""
    return lookup(IMAGEN_UNETS, name, "Imagen U-Net")


def if_unet_config(name: str) -> IFUNetConfig:
    """The registered DeepFloyd IF U-Net config called ``name``."""
    return lookup(IF_UNETS, name, "IF U-Net")


def text_encoder_config(name: str) -> T5EncoderConfig:
    """The registered T5 encoder config called ``name``."""
    return lookup(TEXT_ENCODERS, name, "T5 encoder")


def cascade_config(name: str) -> CascadeConfig:
    """The registered cascade called ``name``."""
    return lookup(CASCADES, name, "cascade")
