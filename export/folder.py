"""Export a family's components into one folder with a manifest, all or nothing.

Everything is written into a temporary folder beside the destination and renamed into place at the
end: an interrupted or failed export never leaves a half-written ``DIR``; with ``force`` an existing
``DIR`` is replaced only after the new one is complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from genrt.errors import InputError
from genrt.families import family as lookup_family
from genrt.fileio import file_errors, retired_name, staging_folder
from genrt.lock import locked
from genrt.export.onnx_export import EXTERNAL_DATA_BYTES, export_component
from genrt.export.spec import ComponentSpec
from genrt.export.tokenizer import TokenizerSource
from genrt.manifest import (PRECISIONS, ComponentEntry, ExportRecord, Manifest, NodeCounts, ShapeRange, TensorSpec,
                            read_manifest, sha256_of, write_manifest)
from genrt.settings import FamilySettings, TokenizerSettings

TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class FamilyExport:
    """A model family's export plan: its precision, component specs and the runtime's settings."""

    family: str  # a name of genrt.families.FAMILIES
    config: str  # config name (or checkpoint file name)
    precision: str  # "fp32", "fp16", "bf16": the float dtype of every spec and graph; "int8": fp32, some quantised
    components: dict[str, ComponentSpec]  # component name -> spec, in export order
    settings: FamilySettings  # the manifest's "settings" (the family's class of genrt.settings)
    tokenizer: TokenizerSource | None = None  # written to DIR/tokenizer/ (settings.tokenizer)
    text_component: str | None = None  # the component that reads token ids: exporting it needs a tokenizer
    # How the plan was made (weights source, ranges), written to the manifest's "export_options" so that
    # `genrt parity` can rebuild the same PyTorch reference; None for plans that cannot be rebuilt.
    options: ExportRecord | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")


def select_components(plan: FamilyExport, names: list[str] | None) -> list[str]:
    """``names`` validated against the plan (default: every component)."""
    if not names:
        return list(plan.components)
    unknown = [name for name in names if name not in plan.components]
    if unknown:
        raise InputError(
            f"unknown {plan.family} component(s): {', '.join(unknown)}",
            fix=f"choose from {', '.join(plan.components)}",
        )
    return list(dict.fromkeys(names))


def check_destination(out_dir: Path, force: bool) -> None:
    """Refuse a non-empty destination without ``force`` and an unwritable parent folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder", fix="choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise InputError(f"output folder {out_dir} is not empty", fix="choose an empty folder or pass --force")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise InputError(f"cannot create {parent}", fix="choose an --out folder you can write to") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write into {parent}", fix="choose an --out folder you can write to")


@locked("export", folder_argument="out_dir")
def export_folder(
    plan: FamilyExport,
    out_dir: str | Path,
    *,
    components: list[str] | None = None,
    force: bool = False,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
) -> Manifest:
    """Export ``components`` of ``plan`` (in its precision) to ``out_dir``; returns the manifest written."""
    out_dir = Path(out_dir).absolute()
    names = select_components(plan, components)
    if plan.tokenizer is None and plan.text_component in names:
        raise InputError(
            f"the {plan.family} export includes {plan.text_component} but no tokenizer for its prompts",
            fix="pass --tokenizer FOLDER (the model's tokenizer files), or --random-weights for a stand-in",
        )
    if plan.precision == "bf16" and plan.text_component in names:
        others = ", ".join(name for name in names if name != plan.text_component) or "another component"
        raise InputError(f"bf16 export of {plan.text_component} is not supported (torch.onnx's TorchScript exporter "
                         "fails on its bfloat16 constants)",
                         fix=f"export {plan.text_component} with --precision fp16 or fp32, or bf16 with --components "
                             f"{others}")
    precisions = component_precisions(plan, names)
    check_destination(out_dir, force)
    staging = staging_folder(out_dir)
    try:
        settings = plan.settings
        if plan.tokenizer is not None:
            pad_id = plan.tokenizer.write_into(staging / TOKENIZER_DIR)
            settings = dataclasses.replace(settings, tokenizer=TokenizerSettings(
                folder=f"{TOKENIZER_DIR}/", kind=plan.tokenizer.kind, pad_token_id=None if pad_id is None else int(pad_id)))
        entries = {}
        for name in names:
            spec = plan.components[name]
            with file_errors(out_dir / name):  # disk full while writing the graph: a clean FileError
                result = export_component(spec, precisions[name], staging / name, external_data_bytes=external_data_bytes)
            entries[name] = ComponentEntry(
                name=name,
                onnx=result.onnx,
                external_data=result.external_data,
                sha256=sha256_of(result.onnx),
                inputs=tuple(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in spec.inputs),
                outputs=tuple(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in spec.outputs),
                profile={tensor: ShapeRange(*(tuple(points[p]) for p in ("min", "opt", "max")))
                         for tensor, points in spec.profile().items()},
                fp32_islands=tuple(result.fp32_islands),
                nodes=NodeCounts(exported=result.cleanup.nodes_before, cleaned=result.cleanup.nodes_after),
            )
        write_manifest(Manifest(root=staging, family=plan.family, config=plan.config, precision=plan.precision,
                                components=entries, settings=settings, export_options=plan.options))
        _replace(staging, out_dir, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(out_dir)


def component_precisions(plan: FamilyExport, names: list[str]) -> dict[str, str]:
    """The precision each component of ``names`` is exported in (``Family.component_precision``); an int8 export
    that would quantise none of them is refused."""
    entry = lookup_family(plan.family)
    precisions = {name: entry.component_precision(plan.precision, name) for name in names}
    if plan.precision == "int8" and "int8" not in precisions.values():
        where = (f"its {', '.join(entry.int8)}" if entry.int8
                 else "no component of this family (none was measured faster in int8 on ONNX Runtime's CPU)")
        raise InputError(f"an int8 export of {plan.family} {', '.join(names)} would quantise nothing: int8 is for "
                         f"{where}", fix="export with --precision fp32" + (
                             f", or include {' or '.join(entry.int8)} in --components" if entry.int8 else ""))
    return precisions


def _replace(staging: Path, out_dir: Path, force: bool) -> None:
    """Move the finished ``staging`` folder to ``out_dir``, replacing an old one only at the end, and only
    with ``force``: without it, a folder that appeared at ``out_dir`` meanwhile is left alone (refused)."""
    if not force:
        check_destination(out_dir, force)  # anything that appeared since the start is refused, never deleted
        with file_errors(out_dir):
            staging.rename(out_dir)  # onto nothing, or onto an empty folder
        return
    retired = retired_name(out_dir)
    with file_errors(out_dir):
        if out_dir.exists():
            out_dir.rename(retired)
        staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)
