"""The tokenizer an export folder carries: ``DIR/tokenizer/tokenizer.json`` for the torch-free runtime.

The runtime reads one HF ``tokenizers`` file. Export takes it from, in order:

1. the user's tokenizer folder holding ``tokenizer.json`` (copied with its companions);
2. a folder with only the "slow" files (CLIP's ``vocab.json`` + ``merges.txt``, T5's ``spiece.model``),
   as many diffusers pipeline folders ship them: converted once, here, with ``transformers``;
3. for ``--random-weights`` without a tokenizer: a *stand-in* character-level tokenizer that fits the
   text encoder (its vocabulary size and its start / end / padding ids). Random weights carry no
   meaning, so any fixed mapping serves; the stand-in lets a random-weight model (for example the
   real-size SD 1.5 for latency work) run end to end. The manifest says which one was used.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from genrt.errors import InputError, require

TOKENIZER_FILE = "tokenizer.json"
# Characters of the stand-in vocabulary (lower-cased prompts; anything else maps to the unknown token).
STANDIN_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'-"


@dataclass(frozen=True)
class StandinVocabulary:
    """What a stand-in tokenizer must agree on with its text encoder."""

    vocab_size: int  # ids must stay below this
    end_id: int  # appended to every prompt (CLIP <|endoftext|>, T5 </s>)
    pad_id: int  # fills the rest of the sequence
    start_id: int | None = None  # prepended to every prompt (CLIP <|startoftext|>; T5 has none)


@dataclass(frozen=True)
class TokenizerSource:
    """Where the export folder's tokenizer comes from: a user folder, or a stand-in vocabulary."""

    folder: Path | None = None  # the user's tokenizer folder (tokenizer.json or slow-tokenizer files)
    standin: StandinVocabulary | None = None  # used when ``folder`` is None

    def __post_init__(self):
        if (self.folder is None) == (self.standin is None):
            raise ValueError("a TokenizerSource takes exactly one of folder and standin")

    @property
    def kind(self) -> str:
        """'folder' or 'stand-in' (recorded in the manifest)."""
        return "folder" if self.folder is not None else "stand-in"

    def write_into(self, destination: Path) -> int | None:
        """Create ``destination`` holding ``tokenizer.json`` (and the user's companion files).

        Returns the padding id the tokenizer's configuration names (SD 1.x pads with the end token,
        SD 2.x with "!", T5 with <pad>), or None when it names none.
        """
        destination.mkdir(parents=True)
        if self.standin is not None:
            standin_tokenizer(self.standin).save(str(destination / TOKENIZER_FILE))
            return self.standin.pad_id
        folder = Path(self.folder)
        if not folder.is_dir():
            raise InputError(f"tokenizer folder {folder} not found", fix="pass the folder that holds the tokenizer files")
        for file in sorted(p for p in folder.iterdir() if p.is_file()):
            shutil.copy2(file, destination / file.name)
        if not (destination / TOKENIZER_FILE).is_file() or (folder / "tokenizer_config.json").is_file():
            fast = _load_fast_tokenizer(folder)
            if not (destination / TOKENIZER_FILE).is_file():
                fast.backend_tokenizer.save(str(destination / TOKENIZER_FILE))
            return fast.pad_token_id
        return None


def _load_fast_tokenizer(folder: Path):
    """transformers' fast tokenizer of ``folder`` (converting slow-tokenizer files when needed)."""
    transformers = require("transformers", extra="export")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # transformers raises many types for unreadable folders
        raise InputError(
            f"tokenizer folder {folder} could not be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
            fix="save it with a fast tokenizer first: AutoTokenizer.from_pretrained(folder).save_pretrained(folder)",
        ) from None


def standin_tokenizer(vocabulary: StandinVocabulary):
    """A character-level ``tokenizers.Tokenizer`` within ``vocabulary`` (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = {"<start>": vocabulary.start_id, "<end>": vocabulary.end_id, "<pad>": vocabulary.pad_id}
    specials = {token: token_id for token, token_id in specials.items() if token_id is not None}
    taken = set(specials.values())
    free = (i for i in range(vocabulary.vocab_size) if i not in taken)
    vocab = dict(specials)
    vocab["<unk>"] = next(free)
    for character in STANDIN_CHARACTERS:
        token_id = next(free, None)
        if token_id is None:
            break  # a tiny vocabulary keeps the first characters; the rest become <unk>
        vocab[character] = token_id
    if max(vocab.values()) >= vocabulary.vocab_size:
        raise InputError(f"a stand-in tokenizer does not fit a vocabulary of {vocabulary.vocab_size}",
                         fix="pass --tokenizer with the model's tokenizer folder")
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    single = ("<start> " if vocabulary.start_id is not None else "") + "$A <end>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(token, token_id) for token, token_id in specials.items() if token != "<pad>"])
    tokenizer.add_special_tokens(list(specials))
    tokenizer.enable_padding(pad_id=vocabulary.pad_id, pad_token="<pad>")
    return tokenizer


def tokenizer_source(folder: Path | None, random_weights: bool, standin: StandinVocabulary) -> TokenizerSource | None:
    """The user's folder; else the stand-in for random weights; else None (export then asks for one)."""
    if folder is not None:
        return TokenizerSource(folder=Path(folder))
    return TokenizerSource(standin=standin) if random_weights else None
