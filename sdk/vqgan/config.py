"""Configurations of the VQGAN family: the autoencoder, its training loss and the GPT prior.

Named configs live in a registry (``vqgan_config(name)``, ``prior_config(name)``): the two
taming-transformers ImageNet VQGANs (f=16, 1024 and 16384 codes) with the GPT priors trained on
them, and ``tiny`` for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from genrt.errors import ConfigError
from genrt.sdk.registry import lookup
from genrt.shapes import all_captions


@dataclass(frozen=True)
class VQGANConfig:
    """The taming-transformers VQGAN (``ddconfig`` + quantiser settings)."""

    in_channels: int = 3  # image channels the encoder reads
    out_channels: int = 3  # image channels the decoder writes
    ch: int = 128  # base channel count; level i has ch * ch_mult[i] channels
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # channel multiplier per resolution level
    num_res_blocks: int = 2  # ResnetBlocks per level in the encoder (the decoder has one more)
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sizes (at `resolution` input) that get self-attention
    resolution: int = 256  # nominal training image size; only used to place the attention levels
    z_channels: int = 256  # channels of the encoder output / decoder input
    embed_dim: int = 256  # dimension of a codebook entry (quant_conv maps z_channels -> embed_dim)
    n_embed: int = 1024  # number of codebook entries
    beta: float = 0.25  # weight of the commitment term ||z - sg[e]||^2 in the codebook loss
    dropout: float = 0.0  # dropout inside the ResnetBlocks
    norm_groups: int = 32  # GroupNorm groups of every norm layer
    norm_eps: float = 1e-6  # GroupNorm epsilon of every norm layer
    ema: bool = False  # update the codebook by exponential moving averages instead of gradients
    ema_decay: float = 0.99  # EMA decay of the cluster sizes and code sums
    ema_eps: float = 1e-5  # Laplace-smoothing epsilon of the EMA cluster sizes
    l2_normalize: bool = False  # look codes up by cosine similarity (l2-normalised z and codebook)

    @property
    def downsample_factor(self) -> int:
        """f: the image side divided by the code-grid side."""
        return 2 ** (len(self.ch_mult) - 1)

    def __post_init__(self):
        channels = [self.ch * m for m in self.ch_mult]
        if any(c % self.norm_groups for c in channels):
            raise ConfigError(
                f"VQGAN level channels {channels} are not multiples of norm_groups={self.norm_groups}",
                fix="choose ch and ch_mult so that every level's channel count divides into the groups",
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} is outside (0, 1)", fix="use a decay such as 0.99")


@dataclass(frozen=True)
class VQGANLossConfig:
    """Weights of taming's ``VQLPIPSWithDiscriminator`` (L1 + LPIPS + codebook + adaptive GAN loss)."""

    disc_start: int = 250001  # first training step at which the discriminator loss is switched on
    codebook_weight: float = 1.0  # weight of the quantiser's codebook + commitment loss
    pixel_weight: float = 1.0  # weight of the L1 reconstruction loss
    perceptual_weight: float = 1.0  # weight of the LPIPS perceptual loss
    perceptual_start: int = 0  # first training step with the LPIPS term (taming: 0; before it L1 alone)
    disc_weight: float = 0.8  # multiplies the adaptive weight of the generator's adversarial loss
    disc_factor: float = 1.0  # overall factor of both adversarial terms once enabled
    disc_in_channels: int = 3  # image channels the discriminator reads
    disc_num_layers: int = 3  # stride-2 conv layers of the PatchGAN discriminator
    disc_ndf: int = 64  # channels of the discriminator's first conv
    disc_loss: str = "hinge"  # "hinge" or "vanilla" (softplus) discriminator loss
    perceptual_batch: int | None = None  # LPIPS sees the first this many images of a batch (None: all)

    def __post_init__(self):
        if self.disc_loss not in ("hinge", "vanilla"):
            raise ConfigError(f"unknown disc_loss {self.disc_loss!r}", fix="use 'hinge' or 'vanilla'")
        if self.perceptual_batch is not None and self.perceptual_batch < 1:
            raise ConfigError(f"perceptual_batch={self.perceptual_batch}", fix="use None (all images) or >= 1")


@dataclass(frozen=True)
class VQGANTrainingConfig:
    """Optimisation of the VQGAN (taming ``VQModel.configure_optimizers``): two Adam optimisers."""

    learning_rate: float = 4.5e-6  # Adam step size of autoencoder and discriminator (taming: 4.5e-6 x batch size)
    adam_betas: tuple[float, float] = (0.5, 0.9)  # Adam (beta1, beta2) of both optimisers
    loss: VQGANLossConfig = VQGANLossConfig()  # weights of the training objective

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate}", fix="use a positive learning rate")


@dataclass(frozen=True)
class PriorConfig:
    """minGPT over code indices, conditioned on a prefix of condition tokens (taming ``cond_transformer``).

    Condition ids and image codes share one token embedding, as in taming: a class label c is the
    token c at the prefix position.
    """

    vocab_size: int = 1024  # rows of the token embedding and width of the logits (image codes)
    block_size: int = 512  # maximum sequence length: condition prefix + image tokens - 1
    n_layer: int = 24  # transformer blocks
    n_head: int = 16  # attention heads per block
    n_embd: int = 1024  # model width
    dropout: float = 0.0  # embedding, attention and residual dropout (0 for inference)
    n_condition_tokens: int = 1  # length of the conditioning prefix (1 for a class label or an SOS token)
    condition_vocab_size: int = 1  # distinct condition ids (classes, or 1 = SOS only); <= vocab_size
    condition_names: tuple[str, ...] = ()  # what each condition id means (class captions), () when unnamed

    @property
    def head_dim(self) -> int:
        """d: channels per attention head."""
        return self.n_embd // self.n_head

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}",
                              fix="choose n_embd as a multiple of n_head")
        if self.n_condition_tokens < 1:
            raise ConfigError("the prior needs at least one condition token (a class label or an SOS token)",
                              fix="set n_condition_tokens >= 1")
        if not 1 <= self.condition_vocab_size <= self.vocab_size:
            raise ConfigError(
                f"condition_vocab_size={self.condition_vocab_size} must lie in [1, vocab_size={self.vocab_size}]",
                fix="condition ids share the token embedding, so use at most vocab_size of them",
            )
        if self.condition_names and len(self.condition_names) != self.condition_vocab_size:
            raise ConfigError(f"{len(self.condition_names)} condition names for condition_vocab_size="
                              f"{self.condition_vocab_size}", fix="name every condition id, or none")
        if self.block_size < self.n_condition_tokens:
            raise ConfigError(f"block_size={self.block_size} is shorter than the condition prefix",
                              fix="raise block_size")


_TAMING_F16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256,
                   z_channels=256, embed_dim=256)

VQGAN_CONFIGS: dict[str, VQGANConfig] = {
    # taming vqgan_imagenet_f16_1024 (configs/imagenet_vqgan.yaml; also the FacesHQ first stage)
    "taming-f16-1024": VQGANConfig(**_TAMING_F16, n_embed=1024),
    # taming vqgan_imagenet_f16_16384
    "taming-f16-16384": VQGANConfig(**_TAMING_F16, n_embed=16384),
    # a few hundred thousand parameters: f=2, 16 codes of dimension 8
    "tiny": VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16,
                        z_channels=8, embed_dim=8, n_embed=16),
    # genrt's demo model (models/vqgan-shapes, recipe genrt.sdk.train.recipes.vqgan_shapes): 64x64 -> 8x8 codes.
    # One norm group: per-channel groups would normalise each image's colour away. Cosine lookup keeps
    # most of the 1024 codes in use.
    "shapes": VQGANConfig(ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(), resolution=64,
                          z_channels=32, embed_dim=16, n_embed=1024, norm_groups=1, l2_normalize=True),
}

PRIOR_CONFIGS: dict[str, PriorConfig] = {
    # taming configs/faceshq_transformer.yaml: 256 coordinate tokens (1024 bins) + 16x16 image tokens
    "taming-f16-1024": PriorConfig(vocab_size=1024, block_size=512, n_layer=24, n_head=16, n_embd=1024,
                                   n_condition_tokens=256, condition_vocab_size=1024),
    # taming's class-conditional ImageNet transformer (cIN, ~1.4B): one class token + 16x16 image tokens
    "taming-f16-16384": PriorConfig(vocab_size=16384, block_size=256, n_layer=48, n_head=24, n_embd=1536,
                                    n_condition_tokens=1, condition_vocab_size=1000),
    # 8x8 grid of the tiny VQGAN (16-pixel images), 10 classes
    "tiny": PriorConfig(vocab_size=16, block_size=64, n_layer=2, n_head=2, n_embd=32,
                        n_condition_tokens=1, condition_vocab_size=10),
    # the demo model's prior: the caption's index among the 36 shapes captions, then the 8x8 codes
    "shapes": PriorConfig(vocab_size=1024, block_size=64, n_layer=4, n_head=4, n_embd=128,
                          n_condition_tokens=1, condition_vocab_size=len(all_captions()),
                          condition_names=all_captions()),
}


def vqgan_config(name: str) -> VQGANConfig:
    """The registered VQGAN config called ``name``."""
    return lookup(VQGAN_CONFIGS, name, "VQGAN")


def prior_config(name: str) -> PriorConfig:
    """The registered GPT-prior config called ``name`` (the prior trained on the VQGAN of that name)."""
    return lookup(PRIOR_CONFIGS, name, "prior")
