"""Export contract of the VQGAN family (taming-transformers VQGAN + GPT prior), per docs/contracts.md.

Components (``f`` = the VQGAN's down-sampling factor, L layers, d = head width):

Weights: random (``--random-weights``), a taming-transformers ``.ckpt`` (``--checkpoint`` with ``--config``):
a VQModel checkpoint gives ``encoder`` and ``decoder``, a cond-transformer checkpoint also the ``prior``; or a
diffusers ``VQModel`` folder (``--checkpoint FOLDER``, no ``--config``: the architecture is its config.json):
``encoder`` and ``decoder``.

- ``encoder``: image (B, 3, H, W) -> indices (B, H/f, W/f) int32; the codebook search is a float32
  island in half-precision exports, and parity allows a differing index only where the float32
  reference has a near tie between two codes.
- ``decoder``: indices (B, h, w) int32 -> image (B, 3, f*h, f*w)
- ``prior``: input_ids (B, T) int32, position (1,) int32 (absolute position of the first input token,
  = P), past_key_values (L, 2, B, heads, P, d) -> logits (B, T, V) float32, present_key_values
  (L, 2, B, heads, P+T, d). The first call has P = 0 (an empty cache); T runs up to the condition
  prefix length (or ``--sequence-length``), P up to block_size - 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genrt.errors import InputError
from genrt.export.folder import FamilyExport
from genrt.export.options import ExportOptions, Range
from genrt.export.parity import TOLERANCES
from genrt.export.spec import ComponentSpec, SymbolRange, TensorSpec, float_dtype_name
from genrt.export.weights import Weights
from genrt.sdk.vqgan.config import VQGAN_CONFIGS, PriorConfig, VQGANConfig, prior_config, vqgan_config
from genrt.sdk.vqgan.quantizer import VectorQuantizer
from genrt.settings import VqganSettings

FAMILY = "vqgan"
# A code index may differ from the float32 reference where the two nearest codes' distances differ by
# less than this multiple of the largest change a relative error TOLERANCES[precision] in z can cause.
TIE_MARGIN = 1.0


def config_names() -> list[str]:
    return sorted(VQGAN_CONFIGS)


class EncoderComponent(nn.Module):
    """image (B, 3, H, W) in [-1, 1] -> indices (B, H/f, W/f) int32 of the nearest codebook entries."""

    def __init__(self, vqgan: nn.Module):
        super().__init__()
        self.vqgan = vqgan

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, _, indices = self.vqgan.encode(image)
        return indices.to(torch.int32)


class DecoderComponent(nn.Module):
    """indices (B, h, w) int32 -> image (B, 3, f*h, f*w)."""

    def __init__(self, vqgan: nn.Module):
        super().__init__()
        self.vqgan = vqgan

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.vqgan.decode_indices(indices)


class PriorComponent(nn.Module):
    """One cached step of the GPT prior, with the position of the first token given explicitly.

    input_ids (B, T) int32, position (1,) int32, past_key_values (L, 2, B, heads, P, d)
    -> logits (B, T, V) float32, present_key_values (L, 2, B, heads, P+T, d).
    Same computation as ``GPTPrior.forward(ids, past)`` when position = P.
    """

    def __init__(self, prior: nn.Module):
        super().__init__()
        self.prior = prior

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, past_key_values: torch.Tensor):
        prior = self.prior
        positions = position.long() + torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        # A real call keeps P + T <= block_size; the profile's corner (P, T both at max) does not, and is
        # clamped into the table so that every shape of the profile computes (and parity can test it).
        positions = positions.clamp(max=prior.pos_emb.shape[1] - 1)
        x = prior.tok_emb(input_ids.long()) + prior.pos_emb[0, positions]  # (B, T, C)
        presents = []
        for i, block in enumerate(prior.blocks):
            x, present = block(x, past_key_values[i])  # present: (2, B, heads, P+T, d)
            presents.append(present)
        logits = prior.head(prior.ln_f(x)).float()  # (B, T, V)
        return logits, torch.stack(presents)


def near_ties(vqgan: nn.Module, precision: str):
    """inputs -> {"indices": mask (B, h, w)} of codes whose two nearest entries are within the error margin.

    A relative error ``eps`` (the precision's parity bound) in z changes the difference of the distances
    to the two nearest entries, d(z, e2) - d(z, e1) = 2 z.(e1 - e2) + |e2|^2 - |e1|^2, by at most
    2 eps |z| |e1 - e2|; codes whose gap is within ``TIE_MARGIN`` times that are near ties.
    """
    eps = TOLERANCES[precision]

    def ties(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            z = vqgan.quant_conv(vqgan.encoder(inputs["image"].float()))  # (B, C, h, w)
            batch, channels, height, width = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, channels)  # (N, C)
            quantizer: VectorQuantizer = vqgan.quantize
            if quantizer.l2_normalize:
                flat = nn.functional.normalize(flat, dim=1)
            codebook = quantizer.codebook()
            distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
            nearest = distance.topk(2, dim=1, largest=False)  # values, indices: (N, 2)
            gap = nearest.values[:, 1] - nearest.values[:, 0]
            spread = (codebook[nearest.indices[:, 0]] - codebook[nearest.indices[:, 1]]).norm(dim=1)  # |e1 - e2|
            margin = TIE_MARGIN * 2 * eps * flat.norm(dim=1) * spread
            return {"indices": (gap <= margin).reshape(batch, height, width)}

    return ties


def _load_taming(config_name: str, options: ExportOptions):
    """Factories of the VQGAN and the prior (None without ``transformer.*`` keys) of a taming ``.ckpt``:
    a VQModel checkpoint (encoder and decoder only) or a cond-transformer one (all three components)."""
    from genrt.sdk.checkpoint import read_state_dict
    from genrt.sdk.vqgan.checkpoint import load_taming_prior, load_taming_vqgan

    has_prior = any(key.startswith("transformer.") for key in read_state_dict(options.checkpoint))
    vqgan = load_taming_vqgan(options.checkpoint, config_name).float().requires_grad_(False)
    if not has_prior:
        return (lambda: vqgan), None
    prior = load_taming_prior(options.checkpoint, config_name).float().requires_grad_(False)
    return (lambda: vqgan), (lambda: prior)


def _load_diffusers(options: ExportOptions):
    """(config, VQGAN factory) of a diffusers ``VQModel`` folder (config.json + weights)."""
    from genrt.sdk.vqgan.checkpoint import load_diffusers_vqgan

    vqgan = load_diffusers_vqgan(options.checkpoint).float().requires_grad_(False)
    return vqgan.config, lambda: vqgan


def vqgan_settings(vq: VQGANConfig, prior: PriorConfig | None) -> VqganSettings:
    """The manifest's ``settings``: what the runtime's sampling loop needs besides graphs (no prior: None)."""
    prior_fields = {} if prior is None else dict(
        block_size=prior.block_size,
        n_condition_tokens=prior.n_condition_tokens,
        condition_vocab_size=prior.condition_vocab_size,
        n_layer=prior.n_layer,
        n_head=prior.n_head,
        head_dim=prior.head_dim,
        class_names=prior.condition_names,
    )
    return VqganSettings(downsample_factor=vq.downsample_factor, n_embed=vq.n_embed, image_size=vq.resolution,
                         **prior_fields)


def _prior_spec(gpt: PriorConfig, prior, dtype: str, batch: SymbolRange, options: ExportOptions) -> ComponentSpec:
    """``prior``: the condition prefix goes in one call (T up to its length, P = 0); then one token per call
    with a cache of up to block_size - 1 entries (a 16x16 grid after a 256-token prefix needs P = 510)."""
    tokens = options.sequence_length or Range(1, 1, gpt.n_condition_tokens)
    if tokens.max > gpt.block_size:
        raise InputError(f"--sequence-length {tokens.max} exceeds the prior's block_size {gpt.block_size}",
                         fix=f"use at most {gpt.block_size} tokens per call")
    past_max = gpt.block_size - 1
    past = SymbolRange(0, gpt.block_size // 2, past_max)
    cache = (gpt.n_layer, 2, "B", gpt.n_head)
    return ComponentSpec(
        name="prior",
        module=lambda: PriorComponent(prior()),
        inputs=(
            TensorSpec("input_ids", "int32", ("B", "T"), low=0, high=gpt.vocab_size),
            TensorSpec("position", "int32", (1,), low=0, high=past_max + 1),
            TensorSpec("past_key_values", dtype, cache + ("P", gpt.head_dim)),
        ),
        outputs=(
            TensorSpec("logits", "float32", ("B", "T", gpt.vocab_size)),
            TensorSpec("present_key_values", dtype, cache + ("P+T", gpt.head_dim)),
        ),
        symbols={"B": batch, "T": tokens.symbol(), "P": past},
    )


def plan(config_name: str | None, precision: str, options: ExportOptions) -> FamilyExport:
    """The vqgan components of config ``config_name`` (VQGAN and the prior trained on it), or of the diffusers
    ``VQModel`` folder given as ``options.checkpoint`` (encoder and decoder; ``config_name`` must be None)."""
    folder = options.checkpoint is not None and Path(options.checkpoint).is_dir()
    if folder and config_name is not None:
        raise InputError(f"--config {config_name} given with the folder {options.checkpoint}",
                         fix="drop --config: a diffusers VQModel folder names its own architecture")
    if config_name is None and not folder:
        raise InputError("vqgan exports of a taming .ckpt or random weights need --config (the file does not name "
                         "the architecture)", fix=f"pass --config with one of {', '.join(config_names())}, "
                                                  "or a diffusers VQModel folder as --checkpoint")
    if folder:
        if options.sequence_length is not None:
            raise InputError("--sequence-length sets the prior's token range; a VQModel folder has no prior",
                             fix="drop --sequence-length")
        vq, vqgan = _load_diffusers(options)
        gpt = prior = None
    elif options.checkpoint is not None:
        vq, gpt = vqgan_config(config_name), prior_config(config_name)
        vqgan, prior = _load_taming(config_name, options)
    else:
        from genrt.sdk.vqgan.autoencoder import VQModel
        from genrt.sdk.vqgan.prior import GPTPrior

        vq, gpt = vqgan_config(config_name), prior_config(config_name)
        weights = Weights(options)
        vqgan = lambda: weights.get("vqgan.", lambda: VQModel(vq))  # noqa: E731
        prior = lambda: weights.get("prior.", lambda: GPTPrior(gpt))  # noqa: E731
    dtype = float_dtype_name(precision)
    f = vq.downsample_factor

    batch = options.batch_range().symbol()
    pixels = options.resolution_range(vq.resolution, f)
    fix = f"choose a --resolution divisible by {f} (the VQGAN down-samples by {f})"
    grid = pixels.symbol(1, f, what="resolution", fix=fix)
    image = pixels.symbol(f, what="resolution", fix=fix)

    specs = [
        ComponentSpec(
            name="encoder",
            module=lambda: EncoderComponent(vqgan()),
            inputs=(TensorSpec("image", dtype, ("B", vq.in_channels, "H", "W"), low=-1, high=1, uniform=True),),
            outputs=(TensorSpec("indices", "int32", ("B", f"H/{f}", f"W/{f}")),),
            symbols={"B": batch, "H": image, "W": image},
            fp32_modules={"codebook_search": (VectorQuantizer,)},
            near_ties=lambda inputs: near_ties(vqgan(), precision)(inputs),
        ),
        ComponentSpec(
            name="decoder",
            module=lambda: DecoderComponent(vqgan()),
            inputs=(TensorSpec("indices", "int32", ("B", "h", "w"), low=0, high=vq.n_embed),),
            outputs=(TensorSpec("image", dtype, ("B", vq.out_channels, f"{f}h", f"{f}w")),),
            symbols={"B": batch, "h": grid, "w": grid},
        ),
    ]
    if prior is not None:
        specs.append(_prior_spec(gpt, prior, dtype, batch, options))
    return FamilyExport(
        family=FAMILY,
        config=config_name or f"diffusers-vqmodel-{Path(options.checkpoint).name}",
        precision=precision,
        components={spec.name: spec for spec in specs},
        settings=vqgan_settings(vq, gpt),
        options=options.record(),
    )
