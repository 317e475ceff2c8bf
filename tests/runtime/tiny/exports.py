"""Test-only helpers: export tiny torch modules to ONNX and write an export folder's manifest.

The runtime under test never imports torch; these helpers (and the tests) do, to make graphs. Manifests
are written through :mod:`genrt.manifest`, the module every writer uses.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from genrt.manifest import SCHEMA_VERSION, ComponentEntry, Manifest, ShapeRange, TensorSpec, sha256_of
from genrt.manifest import write_manifest as write_manifest_file
from genrt.settings import FamilySettings

OPSET = 17


def export_component(root: Path, name: str, module: torch.nn.Module, inputs: list[tuple[str, np.ndarray, tuple]],
                     outputs: list[tuple[str, str, tuple]], profile: dict | None = None) -> ComponentEntry:
    """Export ``module`` to ``root/name/model.onnx``; return its manifest entry.

    ``inputs``: (name, sample array, shape with ints and symbols); ``outputs``: (name, dtype, shape);
    ``profile``: input name -> {"min": shape, "opt": shape, "max": shape}.
    """
    path = root / name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {}
    for tensor_name, _, shape in inputs:
        dynamic_axes[tensor_name] = {axis: dim for axis, dim in enumerate(shape) if isinstance(dim, str)}
    for tensor_name, _, shape in outputs:
        dynamic_axes[tensor_name] = {axis: dim for axis, dim in enumerate(shape) if isinstance(dim, str)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(torch.from_numpy(sample) for _, sample, _ in inputs), str(path),
                          input_names=[n for n, _, _ in inputs], output_names=[n for n, _, _ in outputs],
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return ComponentEntry(
        name=name,
        onnx=path,
        external_data=None,
        sha256=sha256_of(path),
        inputs=tuple(TensorSpec(n, str(sample.dtype), tuple(shape)) for n, sample, shape in inputs),
        outputs=tuple(TensorSpec(n, dtype, tuple(shape)) for n, dtype, shape in outputs),
        profile={tensor: ShapeRange(*(tuple(points[p]) for p in ("min", "opt", "max")))
                 for tensor, points in (profile or {}).items()},
    )


def write_manifest(root: Path, family: str, components: dict[str, ComponentEntry], settings: FamilySettings,
                   schema_version: int = SCHEMA_VERSION) -> Path:
    """Write ``root/manifest.json`` (config "tiny", fp32) through genrt.manifest; returns ``root``."""
    write_manifest_file(Manifest(root=root, family=family, config="tiny", precision="fp32", components=components,
                                 settings=settings, schema_version=schema_version))
    return root


CORPUS = ["a photograph of an astronaut riding a horse", "a red cube on a blue sphere",
          "an oil painting of a cat", "the quick brown fox jumps over the lazy dog"] * 4


def write_tokenizer(folder: Path, kind: str = "clip") -> Path:
    """A tiny trained tokenizer.json: "clip" (BPE, start + end tokens) or "t5" (end token, <pad> = 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "clip":
        specials = ["<|startoftext|>", "<|endoftext|>"]
        tokenizer = Tokenizer(models.BPE(unk_token=None))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=specials))
        template = "<|startoftext|> $A <|endoftext|>"
    else:
        specials = ["<pad>", "</s>", "<unk>"]
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
        template = "$A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in specials if t in template])
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
