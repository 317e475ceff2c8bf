"""The frozen T5 text encoder of the Imagen cascade and its tokenizer (from ``transformers``).

The network is ``transformers.T5EncoderModel``, held as ``.transformer`` so its parameter names are
those of a ``text_encoder/`` folder of DeepFloyd IF (``encoder.block.0.layer.0.SelfAttention.q.weight``...).
The attention mask goes into T5's self-attention. ``zero_padding`` (genrt's Imagen cascade) sets the
embeddings of padding positions to zero, so a longer padding only appends zero rows; DeepFloyd IF keeps
T5's outputs there, as diffusers' IF pipelines do (its U-Nets attend to them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genrt.errors import CheckpointError, InputError, require
from genrt.sdk.imagen.config import T5EncoderConfig


def t5_config(config: T5EncoderConfig):
    """The ``transformers.T5Config`` of ``config`` (encoder only)."""
    transformers = require("transformers", "sdk")
    return transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
        num_layers=config.num_layers, num_heads=config.num_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        feed_forward_proj=config.feed_forward_proj, layer_norm_epsilon=config.layer_norm_epsilon,
        dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
    )


class T5TextEncoder(nn.Module):
    """Token ids + attention mask -> per-token embeddings; weights frozen.

    input_ids: (B, T) integer, attention_mask: (B, T) (1 = token, 0 = padding)
    -> text_embeddings (B, T, d_model), zero at padding positions when ``zero_padding``.
    """

    def __init__(self, config: T5EncoderConfig, transformer: nn.Module | None = None, zero_padding: bool = True):
        super().__init__()
        transformers = require("transformers", "sdk")
        self.config = config
        self.zero_padding = zero_padding
        self.transformer = transformer if transformer is not None else transformers.T5EncoderModel(t5_config(config))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int = 77, zero_padding: bool = True) -> "T5TextEncoder":
        """Load a ``text_encoder/`` folder (config.json + weights) saved by transformers."""
        transformers = require("transformers", "sdk")
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"no config.json in {folder}", fix="pass the text_encoder/ folder of an IF pipeline")
        try:
            model = transformers.T5EncoderModel.from_pretrained(str(folder), local_files_only=True,
                                                                dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load a T5 encoder from {folder}: {exc}",
                                  fix="the folder needs config.json and model weights") from None
        c = model.config
        config = T5EncoderConfig(
            vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.num_layers,
            num_heads=c.num_heads, max_length=max_length,
            relative_attention_num_buckets=c.relative_attention_num_buckets,
            relative_attention_max_distance=c.relative_attention_max_distance,
            feed_forward_proj=c.feed_forward_proj, layer_norm_epsilon=c.layer_norm_epsilon,
        )
        return cls(config, model, zero_padding)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or input_ids.dtype.is_floating_point:
            raise InputError(f"`input_ids` | received {tuple(input_ids.shape)} {input_ids.dtype} | expected integer (B, T)",
                             fix="tokenize the prompts with this model's tokenizer")
        if attention_mask.shape != input_ids.shape:
            raise InputError(f"`attention_mask` | received {tuple(attention_mask.shape)} | expected "
                             f"{tuple(input_ids.shape)}", fix="pass the mask the tokenizer returned with the ids")
        if input_ids.numel() and (int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0):
            raise InputError(f"`input_ids` holds ids outside 0..{self.config.vocab_size - 1}",
                             fix="use the tokenizer that belongs to this text encoder")
        mask = attention_mask.long()
        hidden = self.transformer(input_ids=input_ids.long(), attention_mask=mask).last_hidden_state  # (B, T, D)
        return hidden * mask[..., None].to(hidden.dtype) if self.zero_padding else hidden


def load_tokenizer(folder: str | Path):
    """The T5 tokenizer of a local ``tokenizer/`` folder (spiece.model or tokenizer.json)."""
    transformers = require("transformers", "sdk")
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder not found: {folder}", fix="pass the tokenizer/ folder of an IF pipeline")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load a T5 tokenizer from {folder}: {exc}",
                              fix="the folder needs spiece.model or tokenizer.json and tokenizer_config.json") from None


def encode_prompts(tokenizer, encoder: T5TextEncoder, prompts: list[str],
                   max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (text_embeddings (B, T, D), text_mask (B, T) int32), T = max_length (config's by default).

    An empty prompt is the unconditional input of classifier-free guidance (only the end token).
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise InputError("`prompts` must be a list of strings", fix="wrap a single prompt in a list")
    length = max_length or encoder.config.max_length
    encoded = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True,
                        add_special_tokens=True, return_tensors="pt")
    mask = encoded.attention_mask.to(torch.int32)
    with torch.no_grad():
        embeddings = encoder(encoded.input_ids, mask)
    return embeddings, mask
