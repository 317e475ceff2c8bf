"""``DIR/manifest.json``: what an export folder holds, for the engine builder and the runtime.

The schema is in docs/contracts.md (``schema_version`` 1). Reading refuses a newer schema and
files that are not a genrt manifest; :func:`verified_onnx` refuses an ONNX file whose hash is not
the one recorded at export (a corrupted or replaced graph).
"""

from __future__ import annotations

import json
from pathlib import Path

import genrt
from genrt.errors import InputError
from genrt.fileio import write_text_atomic
from genrt.runtime.manifest import MANIFEST_FILE, SCHEMA_VERSION, read_manifest_json, sha256_of

# Keys every manifest has (a file without them is not a genrt manifest).
REQUIRED_KEYS = ("schema_version", "family", "precision", "components", "pipeline")


def new_manifest(family: str, config: str, precision: str, pipeline: dict) -> dict:
    """An empty manifest: components, engines and parity are filled in by export, build and parity."""
    return {
        "schema_version": SCHEMA_VERSION,
        "genrt_version": genrt.__version__,
        "family": family,
        "config": config,
        "precision": precision,
        "components": {},
        "pipeline": pipeline,
        "parity": {},
    }


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an export folder; a clear error for a missing, foreign or newer one."""
    path, manifest = read_manifest_json(directory, InputError, json_fix="re-run `genrt export`")
    if not isinstance(manifest, dict) or any(key not in manifest for key in REQUIRED_KEYS):
        raise InputError(f"{path} is not a genrt manifest", fix="pass a folder written by `genrt export`")
    version = manifest["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            f"{path} has schema_version {version}, this genrt {genrt.__version__} reads up to {SCHEMA_VERSION}",
            fix="upgrade genrt, or re-export the model with this version",
        )
    return manifest


def check_components(directory: str | Path, manifest: dict, names: list[str] | None) -> None:
    """Refuse ``names`` (None: all components) that are not components of the export, all in one message."""
    known = manifest["components"]
    unknown = [name for name in names or [] if name not in known]
    if unknown:
        raise InputError(f"unknown component(s) {', '.join(unknown)} in {directory}",
                         fix=f"choose from {', '.join(known)}")


def verified_onnx(directory: str | Path, manifest: dict, component: str) -> Path:
    """Path of a component's ONNX file after checking it exists and has the recorded sha256."""
    entries = manifest["components"]
    if component not in entries:
        raise InputError(
            f"component {component!r} is not in this export", fix=f"choose from {', '.join(entries) or 'none'}"
        )
    entry = entries[component]
    path = Path(directory) / entry["onnx"]
    if not path.is_file():
        raise InputError(f"{path} is missing", fix="re-run `genrt export` into a fresh folder")
    if sha256_of(path) != entry["sha256"]:
        raise InputError(
            f"{path} does not match the sha256 in the manifest (corrupted or replaced)",
            fix="re-run `genrt export --force` to write a consistent folder",
        )
    return path
