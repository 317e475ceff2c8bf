"""Reading state dicts from disk and loading them strictly, with errors that name file and keys.

Family-specific key mapping lives next to each family (``genrt.sdk.<family>.checkpoint``); this
module only reads files and checks that a mapped state dict fits a module exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from genrt.errors import CheckpointError
from genrt.fileio import atomic_path

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# How many offending keys an error message lists before summarising the rest.
KEYS_SHOWN = 8


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a pickled .ckpt/.pt/.bin (unwrapping ``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}", fix="check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: the library's message is the useful part
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}",
            fix="pass an uncorrupted .safetensors or .ckpt file",
        ) from None
    if isinstance(data, Mapping) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__})")
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def find_weights_file(folder: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` (weight files in order of preference) that exists in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no weights in {folder}", fix=f"the folder needs one of {', '.join(names)}")


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    more = len(keys) - KEYS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``; refuse missing keys, unexpected keys and shape mismatches.

    ``source`` names where the weights came from (a file or folder) for the error message.
    Nothing is left randomly initialised: on any mismatch the module is not modified.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs expected {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: " + "; ".join(problems),
            fix="check that the checkpoint and the config belong to the same model",
        )
    module.load_state_dict(dict(state_dict), strict=True)


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write contiguous, unshared copies of the tensors atomically as safetensors."""
    from safetensors.torch import save_file

    tensors = {key: value.detach().contiguous().clone() for key, value in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def refuse_unknown_fields(config: Mapping, known: set[str], source: str | Path, model: str) -> None:
    """Refuse the fields of a diffusers config.json that genrt does not implement (``_`` metadata is skipped)."""
    unknown = sorted(key for key in config if not key.startswith("_") and key not in known)
    if unknown:
        raise CheckpointError(f"{source}: {model} field(s) {', '.join(unknown)} not implemented by genrt",
                              fix=f"remove the field(s) if they keep diffusers' defaults, or use another {model}")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (build on the ``meta`` device to count without allocating)."""
    return sum(p.numel() for p in module.parameters())
