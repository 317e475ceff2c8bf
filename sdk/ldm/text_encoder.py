"""The frozen CLIP text encoder and its tokenizer (from ``transformers``).

The network is ``transformers.CLIPTextModel`` built from our :class:`TextEncoderConfig`, held as
``.transformer``. Files name its weights ``text_model.*`` (diffusers ``text_encoder/`` folders and,
with a ``cond_stage_model.transformer.`` prefix, SD 1.x single files); transformers >= 5 drops that
prefix from its module names, so weights go in and out through :meth:`CLIPTextEncoder.canonical_state_dict`
and :meth:`CLIPTextEncoder.from_canonical`, which accept both spellings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genrt.errors import CheckpointError, InputError, require
from genrt.sdk.ldm.config import TextEncoderConfig

# Key prefix of CLIPTextModel weights in files (transformers < 5 module names).
CANONICAL_PREFIX = "text_model."


def clip_text_config(config: TextEncoderConfig):
    """The ``transformers.CLIPTextConfig`` of ``config``."""
    transformers = require("transformers", "sdk")
    return transformers.CLIPTextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


class CLIPTextEncoder(nn.Module):
    """Token ids -> per-token embeddings after the final LayerNorm; weights frozen.

    input_ids: (B, T) integer, T <= max_position_embeddings -> (B, T, hidden_size).
    """

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        transformers = require("transformers", "sdk")
        self.config = config
        self.transformer = transformers.CLIPTextModel(clip_text_config(config))
        self.requires_grad_(False)
        self.eval()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or input_ids.shape[1] > self.config.max_position_embeddings \
                or input_ids.dtype.is_floating_point:
            raise InputError(
                f"`input_ids` | received {tuple(input_ids.shape)} {input_ids.dtype} | expected integer "
                f"(B, T) with T <= {self.config.max_position_embeddings}",
                fix="tokenize the prompts with this model's tokenizer (padding to max_length)",
            )
        if input_ids.numel() and int(input_ids.max()) >= self.config.vocab_size:
            raise InputError(
                f"`input_ids` holds id {int(input_ids.max())} >= vocabulary size {self.config.vocab_size}",
                fix="use the tokenizer that belongs to this text encoder",
            )
        return self.transformer(input_ids=input_ids.long()).last_hidden_state

    def canonical_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under their file names, ``text_model.*``."""
        return {key if key.startswith(CANONICAL_PREFIX) else CANONICAL_PREFIX + key: value
                for key, value in self.transformer.state_dict().items()}

    def from_canonical(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """File weights (``text_model.*`` or unprefixed) -> this module's state-dict keys.

        The ``position_ids`` buffer that older files carry is not a weight and is dropped.
        """
        nested = any(key.startswith(CANONICAL_PREFIX) for key in self.transformer.state_dict())
        out = {}
        for key, value in state.items():
            if key.endswith("embeddings.position_ids"):
                continue
            bare = key[len(CANONICAL_PREFIX):] if key.startswith(CANONICAL_PREFIX) else key
            out["transformer." + (CANONICAL_PREFIX + bare if nested else bare)] = value
        return out


def load_tokenizer(folder: str | Path):
    """A ``CLIPTokenizer`` from a local folder (vocab.json + merges.txt, or tokenizer.json)."""
    transformers = require("transformers", "sdk")
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder not found: {folder}",
                              fix="pass the tokenizer/ folder of a diffusers pipeline")
    try:
        return transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load a CLIP tokenizer from {folder}: {exc}",
                              fix="the folder needs vocab.json and merges.txt (or tokenizer.json)") from None


def tokenize(tokenizer, prompts: list[str], max_length: int) -> torch.Tensor:
    """Prompts -> (B, max_length) int64 ids, padded with the tokenizer's pad token, truncated."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise InputError("`prompts` must be a list of strings", fix="wrap a single prompt in a list")
    encoded = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                        return_tensors="pt")
    return encoded.input_ids
