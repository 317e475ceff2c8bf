"""The demo models genrt trains itself (issue 15) and how each is exported, as a user's checkpoint would be.

``models/`` of the repository holds one checkpoint per family in the format users have: a diffusers
Stable Diffusion folder (``ldm-shapes/``), a taming ``.ckpt`` (``vqgan-shapes/last.ckpt``) and two DeepFloyd
IF diffusers folders (``imagen-shapes/stage_I``, ``stage_II``). ``export_arguments`` is what follows
``genrt export FAMILY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genrt.errors import InputError

MODELS = Path(__file__).resolve().parents[1] / "models"  # the repository's shipped models


@dataclass(frozen=True)
class ShippedModel:
    """One family's shipped checkpoint, relative to a models folder."""

    family: str  # genrt family name
    checkpoint: str  # --checkpoint, relative to the models folder
    extra: tuple[str, ...] = ()  # further `genrt export` arguments; "{models}" stands for the models folder

    def paths(self, models: Path) -> list[Path]:
        """Every file or folder of the checkpoint under ``models``."""
        extra = [Path(a.format(models=models)) for a in self.extra if "{models}" in a]
        return [models / self.checkpoint, *extra]

    def export_arguments(self, models: Path) -> list[str]:
        """`genrt export FAMILY ...` arguments (without --out, --precision), refusing a missing checkpoint."""
        missing = [str(p) for p in self.paths(models) if not p.exists()]
        if missing:
            raise InputError(f"shipped {self.family} model missing: {', '.join(missing)}",
                             fix="commit the trained model there (`make train-demo` writes all of them)")
        return ["--checkpoint", str(models / self.checkpoint), *(a.format(models=models) for a in self.extra)]


SHIPPED = {
    "ldm": ShippedModel("ldm", "ldm-shapes"),
    "vqgan": ShippedModel("vqgan", "vqgan-shapes/last.ckpt", ("--config", "shapes", "--resolution", "64")),
    # IF pads every prompt to 77 T5 tokens; a text profile down to 1 token fails parity at its min point (a
    # GroupNorm over one token's channels), so the text length is fixed to what the pipeline feeds
    "imagen": ShippedModel("imagen", "imagen-shapes/stage_I", ("--checkpoint-sr", "{models}/imagen-shapes/stage_II",
                                                               "--sequence-length", "77")),
}
