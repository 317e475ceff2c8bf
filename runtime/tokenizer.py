"""Prompt tokenization for the text encoders (CLIP for latent diffusion, T5 for Imagen).

Uses the HF ``tokenizers`` library on the ``tokenizer.json`` that export copied into the folder
(no torch, no transformers). The tokenizer's own post-processor adds the start/end tokens; every
prompt is then padded to the encoder's fixed length. A prompt longer than that is truncated by the
tokenizer (keeping the end token) with a :class:`TruncationWarning`, or refused when
``truncate=False``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from genrt.errors import InputError
from genrt.manifest import ManifestError

# Token names tried, in order, when neither the caller nor tokenizer.json names a padding id.
PAD_TOKENS = ("<pad>", "<|endoftext|>")


class TruncationWarning(UserWarning):
    """A prompt had more tokens than the text encoder accepts and was cut."""


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of prompts, padded to the encoder length T."""

    input_ids: np.ndarray  # (B, T) int32
    attention_mask: np.ndarray  # (B, T) int32: 1 for tokens (start/end included), 0 for padding


def _shown(prompt: str) -> str:
    """A prompt as an error message quotes it: its start, repr-quoted."""
    return repr(prompt if len(prompt) <= 30 else prompt[:27] + "...")


class PromptTokenizer:
    """``tokenizer(prompts) -> TokenBatch`` for an encoder that takes ``max_length`` tokens.

    ``pad_id`` overrides the padding id (SD1 pads with the end token, SD2 with "!", T5 with <pad>).
    """

    def __init__(self, path: str | Path, max_length: int, pad_id: int | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ManifestError(f"tokenizer file {file} is missing", fix="export the folder again with `genrt export`")
        self.max_length = max_length
        try:
            self._full = Tokenizer.from_file(str(file))  # no truncation: measures the real length
        except Exception as exc:  # tokenizers raises a bare Exception for any unreadable file
            raise ManifestError(f"{file} is not a tokenizers file ({' '.join(str(exc).split())[:120]})",
                                fix="export the folder again with `genrt export`") from None
        self._full.no_truncation()
        self._full.no_padding()
        self._cut = Tokenizer.from_file(str(file))  # truncates, letting the post-processor re-add the end token
        self._cut.no_padding()
        self._cut.enable_truncation(max_length)
        self.pad_id = self._pad_id(pad_id)

    def _pad_id(self, pad_id: int | None) -> int:
        if pad_id is not None:
            return int(pad_id)
        if self._full.padding is not None:
            return int(self._full.padding["pad_id"])
        for token in PAD_TOKENS:
            token_id = self._full.token_to_id(token)
            if token_id is not None:
                return token_id
        raise ManifestError("the tokenizer defines no padding token", fix="re-export with a tokenizer that names "
                            "its padding token (recorded as settings.tokenizer.pad_token_id)")

    def __call__(self, prompts: Sequence[str], truncate: bool = True) -> TokenBatch:
        """Tokenize, truncate (with a warning, or refuse when ``truncate=False``) and pad to T."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InputError("prompts must be a list of strings", fix="pass [prompt] for one prompt")
        prompts = list(prompts)
        encodings = self._full.encode_batch(prompts)
        too_long = [i for i, enc in enumerate(encodings) if len(enc.ids) > self.max_length]
        if too_long:
            counts = ", ".join(f"{_shown(prompts[i])} has {len(encodings[i].ids)}" for i in too_long)
            message = (f"prompt {counts} tokens; the text encoder takes at most {self.max_length} "
                       "(start/end tokens included)")
            if not truncate:
                raise InputError(message, fix="shorten the prompt, or allow truncation (truncate=True)")
            warnings.warn(message + "; the ends were cut", TruncationWarning, stacklevel=2)
            for i, enc in zip(too_long, self._cut.encode_batch([prompts[i] for i in too_long])):
                encodings[i] = enc
        ids = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(prompts), self.max_length), dtype=np.int32)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask)
