"""What the user asks of an export: batch, resolution and sequence-length ranges, weights, seed.

Families turn these into the symbol ranges of their components (:mod:`genrt.export.ldm`, ...).
A range is written ``N`` (fixed), ``MIN-MAX`` (optimised for the family's default inside it) or
``MIN-OPT-MAX``; :func:`parse_range` reads that syntax for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genrt.errors import InputError
from genrt.manifest import ExportRecord
from genrt.export.spec import SymbolRange


@dataclass(frozen=True)
class Range:
    """A user's min/opt/max of one quantity (images per call, pixels, tokens), unchecked against a model."""

    min: int  # smallest value the exported graph and engines must accept
    opt: int  # value engines are tuned for
    max: int  # largest value the exported graph and engines must accept

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(
                f"range {self.min}-{self.opt}-{self.max} is not ordered",
                fix="give MIN-OPT-MAX with 1 <= MIN <= OPT <= MAX",
            )

    def scaled(self, factor: int) -> "Range":
        """Every value times ``factor`` (a batch doubled by classifier-free guidance, ...)."""
        return Range(self.min * factor, self.opt * factor, self.max * factor)

    def symbol(self, multiple_of: int = 1, divisor: int = 1, *, what: str = "size", fix: str = "") -> SymbolRange:
        """The symbol range of ``value / divisor``; every value must be a multiple of ``multiple_of * divisor``."""
        step = multiple_of * divisor
        bad = [v for v in (self.min, self.opt, self.max) if v % step]
        if bad:
            raise InputError(f"{what} {bad[0]} is not a multiple of {step}", fix=fix)
        return SymbolRange(self.min // divisor, self.opt // divisor, self.max // divisor, multiple_of=multiple_of)


def parse_range(text: str, what: str, default_opt: int | None = None) -> Range:
    """``"4"`` -> 4-4-4, ``"1-4"`` -> 1-OPT-4 (OPT = ``default_opt`` clamped into 1..4), ``"1-2-4"`` -> 1-2-4."""
    parts = text.split("-")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3:
        raise InputError(f"{what} {text!r} is not a size or a range", fix=f"write {what} as N, MIN-MAX or MIN-OPT-MAX")
    if values != sorted(values):
        raise InputError(f"{what} {text} is not ordered", fix=f"write {what} as MIN-MAX or MIN-OPT-MAX, smallest first")
    if len(values) == 1:
        return Range(values[0], values[0], values[0])
    if len(values) == 2:
        low, high = values
        opt = low if default_opt is None else min(max(default_opt, low), high)
        return Range(low, opt, high)
    return Range(*values)


@dataclass(frozen=True)
class ExportOptions:
    """The user's choices for one family export; ``None`` ranges take the family's defaults."""

    batch: Range | None = None  # prompts (or images) per pipeline call; default 1-1-4
    resolution: Range | None = None  # output height and width in pixels; default around the config's size
    sequence_length: Range | None = None  # text/token length where a family lets it vary (imagen T5, vqgan prior)
    checkpoint: Path | None = None  # weights file or folder; None needs random_weights
    checkpoint_sr: Path | None = None  # imagen: DeepFloyd IF stage II folder beside a stage I --checkpoint
    random_weights: bool = False  # export randomly initialised weights (tests, benchmarks)
    seed: int = 0  # seed of the random weights
    tokenizer: Path | None = None  # folder whose files are copied into DIR/tokenizer/ (None: none)

    def __post_init__(self):
        if self.checkpoint is None and not self.random_weights:
            raise InputError("no weights given", fix="pass --checkpoint PATH, or --random-weights for a test export")
        if self.checkpoint is not None and self.random_weights:
            raise InputError("both --checkpoint and --random-weights given", fix="pass only one of them")
        if self.checkpoint_sr is not None and self.checkpoint is None:
            raise InputError("--checkpoint-sr given without --checkpoint",
                             fix="pass the DeepFloyd IF stage I folder as --checkpoint and stage II as --checkpoint-sr")

    def record(self) -> ExportRecord:
        """The options as the manifest records them (paths absolute), read back by :meth:`from_record`."""
        ranges = {name: None if value is None else (value.min, value.opt, value.max)
                  for name, value in (("batch", self.batch), ("resolution", self.resolution),
                                      ("sequence_length", self.sequence_length))}
        paths = {name: None if value is None else str(Path(value).absolute())
                 for name, value in (("checkpoint", self.checkpoint), ("checkpoint_sr", self.checkpoint_sr),
                                     ("tokenizer", self.tokenizer))}
        return ExportRecord(**ranges, **paths, random_weights=self.random_weights, seed=self.seed)

    @classmethod
    def from_record(cls, record: ExportRecord) -> "ExportOptions":
        ranges = {name: None if getattr(record, name) is None else Range(*getattr(record, name))
                  for name in ("batch", "resolution", "sequence_length")}
        paths = {name: None if getattr(record, name) is None else Path(getattr(record, name))
                 for name in ("checkpoint", "checkpoint_sr", "tokenizer")}
        return cls(**ranges, **paths, random_weights=record.random_weights, seed=record.seed)

    def batch_range(self) -> Range:
        return self.batch or Range(1, 1, 4)

    def resolution_range(self, default: int, multiple: int) -> Range:
        """The resolution, or half .. twice ``default`` (rounded to ``multiple``) with ``default`` as opt."""
        if self.resolution is not None:
            return self.resolution
        low = max(multiple, (default // 2) // multiple * multiple)
        return Range(low, default, 2 * default)
