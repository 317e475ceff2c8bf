"""Read and validate ``DIR/manifest.json``, the folder that ``genrt export`` / ``genrt build`` wrote.

The schema is in ``docs/contracts.md``. Only ``schema_version`` 1 is understood; anything else is
refused with a message that says to export again. File paths in the manifest are relative to the
folder; :meth:`Manifest.verified_file` checks a graph's or engine's sha256 before a backend opens it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from genrt.errors import GenrtError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
FAMILIES = ("ldm", "vqgan", "imagen")
# numpy dtype names a manifest may use for a tensor.
DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool", "uint8")
# Bytes read at a time when hashing a graph or engine (engines reach several GB).
HASH_CHUNK = 1 << 22


class ManifestError(GenrtError):
    """An export folder that cannot be used: missing, of another schema, or with corrupt files."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a component."""

    name: str  # tensor name in the ONNX graph / engine
    dtype: str  # numpy dtype name, one of DTYPES
    shape: tuple[int | str, ...]  # ints are fixed sizes, strings are symbols (e.g. "B", "h")


@dataclass(frozen=True)
class ShapeRange:
    """The min/opt/max shapes an engine profile accepts for one input."""

    min: tuple[int, ...]  # smallest size per axis
    opt: tuple[int, ...]  # size the engine was tuned for
    max: tuple[int, ...]  # largest size per axis


@dataclass(frozen=True)
class EngineSpec:
    """A TensorRT / TensorRT-RTX engine built from a component's ONNX graph."""

    path: Path  # absolute path of the .plan file
    key: str  # build cache key (graph hash + build options)
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str  # version of the library that built it; engines only load in the same version
    compute_capabilities: tuple[str, ...]  # GPUs it runs on, e.g. ("8.6", "9.0")
    static: bool  # built for exactly one shape (profile min == opt == max): CUDA graphs apply
    sha256: str | None  # hex digest of the .plan file, when the builder recorded one


@dataclass(frozen=True)
class ComponentSpec:
    """One exported network (text encoder, UNet, decoder, prior...)."""

    name: str  # key in manifest["components"], e.g. "unet"
    onnx: Path  # absolute path of the .onnx graph
    external_data: Path | None  # weights file beside a >2 GB graph, or None
    sha256: str  # hex digest of the .onnx file
    inputs: tuple[TensorSpec, ...]  # in graph order
    outputs: tuple[TensorSpec, ...]  # in graph order
    profile: dict[str, ShapeRange]  # input name -> allowed shape range, for inputs with symbols
    fp32_islands: tuple[str, ...]  # op kinds kept in float32 under fp16 export
    engines: tuple[EngineSpec, ...]  # built engines, possibly for several GPUs

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest. ``pipeline`` holds family-specific settings as written by export."""

    root: Path  # the export folder
    family: str  # "ldm", "vqgan" or "imagen"
    config: str  # model config name, e.g. "sd15" or "tiny"
    precision: str  # "fp32" or "fp16"
    genrt_version: str  # genrt version that exported the folder
    components: dict[str, ComponentSpec]  # component name -> spec
    pipeline: dict[str, Any] = field(default_factory=dict)  # scheduler config, scaling factor, ...
    parity: dict[str, Any] = field(default_factory=dict)  # export-time parity numbers per component

    def component(self, name: str) -> ComponentSpec:
        if name not in self.components:
            raise ManifestError(
                f"{self.root}: the {self.family} export has no component '{name}' "
                f"(it has {', '.join(sorted(self.components))})",
                fix=f"export again with `genrt export` including '{name}'",
            )
        return self.components[name]

    def path(self, relative: str) -> Path:
        """An existing file or folder named relative to the export folder (e.g. the tokenizer)."""
        path = (self.root / relative).resolve()
        if not path.exists():
            raise ManifestError(f"{self.root}: '{relative}' listed in manifest.json is missing",
                                fix="export the folder again with `genrt export`")
        return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified_file(path: Path, sha256: str | None, fix: str) -> Path:
    """``path`` if it exists and matches ``sha256`` (skipped when None), else a ManifestError."""
    if not path.is_file():
        raise ManifestError(f"file {path} listed in manifest.json is missing", fix=fix)
    if sha256 is not None and sha256_of(path) != sha256.lower():
        raise ManifestError(f"file {path} is corrupted (its sha256 does not match manifest.json)", fix=fix)
    return path


def read_manifest_json(directory: str | Path, error: type[GenrtError], json_fix: str) -> tuple[Path, Any]:
    """``(path, parsed JSON)`` of ``directory/manifest.json``, or ``error`` for a missing or unparsable file.

    Shared with ``genrt.export.manifest``, which raises its own error class and checks the content its own way.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise error(f"{directory} has no {MANIFEST_FILE}", fix="pass a folder written by `genrt export`")
    try:
        return path, json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc})", fix=json_fix) from None


def load_manifest(directory: str | Path) -> Manifest:
    """Parse and validate ``directory/manifest.json``. File hashes are checked later, per backend."""
    root = Path(directory).resolve()
    path, data = read_manifest_json(root, ManifestError, json_fix="export the folder again")
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object", fix="export the folder again")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has schema_version {version!r}; this runtime reads schema_version {SCHEMA_VERSION}",
            fix="re-export the model with this genrt version (`genrt export`)",
        )
    family = _field(data, "family", str, path)
    if family not in FAMILIES:
        raise ManifestError(f"{path}: unknown family '{family}' (known: {', '.join(FAMILIES)})",
                            fix="re-export the model with `genrt export`")
    components = _field(data, "components", dict, path)
    return Manifest(
        root=root,
        family=family,
        config=str(data.get("config", "")),
        precision=_field(data, "precision", str, path),
        genrt_version=str(data.get("genrt_version", "")),
        components={name: _component(name, entry, root, path) for name, entry in components.items()},
        pipeline=dict(data.get("pipeline") or {}),
        parity=dict(data.get("parity") or {}),
    )


def _field(data: Mapping, key: str, kind: type, where: Path | str):
    if key not in data or not isinstance(data[key], kind):
        raise ManifestError(f"{where}: field '{key}' is missing or not a {kind.__name__}",
                            fix="re-export the model with `genrt export`")
    return data[key]


def _tensor(entry: Mapping, where: str) -> TensorSpec:
    name = _field(entry, "name", str, where)
    dtype = _field(entry, "dtype", str, where)
    if dtype not in DTYPES:
        raise ManifestError(f"{where}: tensor '{name}' has unknown dtype '{dtype}'",
                            fix="re-export the model with `genrt export`")
    shape = tuple(_field(entry, "shape", list, where))
    if not all(isinstance(dim, (int, str)) and not isinstance(dim, bool) for dim in shape):
        raise ManifestError(f"{where}: tensor '{name}' has a shape that is not ints and symbols: {shape}",
                            fix="re-export the model with `genrt export`")
    return TensorSpec(name=name, dtype=dtype, shape=shape)


def _component(name: str, entry: Any, root: Path, path: Path) -> ComponentSpec:
    where = f"{path} component '{name}'"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} is not a JSON object", fix="re-export the model with `genrt export`")
    inputs = tuple(_tensor(item, where) for item in _field(entry, "inputs", list, where))
    profile = {}
    for input_name, ranges in (entry.get("profile") or {}).items():
        try:
            shape_range = ShapeRange(*(tuple(int(v) for v in ranges[k]) for k in ("min", "opt", "max")))
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"{where}: profile for '{input_name}' needs int lists min, opt and max",
                                fix="re-export the model with `genrt export`") from None
        spec = next((item for item in inputs if item.name == input_name), None)
        if spec is None or not len(shape_range.min) == len(shape_range.opt) == len(shape_range.max) == len(spec.shape):
            raise ManifestError(f"{where}: profile for '{input_name}' does not match the component's inputs",
                                fix="re-export the model with `genrt export`")
        profile[input_name] = shape_range
    external = entry.get("external_data")
    return ComponentSpec(
        name=name,
        onnx=root / _field(entry, "onnx", str, where),
        external_data=None if external is None else root / external,
        sha256=_field(entry, "sha256", str, where),
        inputs=inputs,
        outputs=tuple(_tensor(item, where) for item in _field(entry, "outputs", list, where)),
        profile=profile,
        fp32_islands=tuple(entry.get("fp32_islands") or ()),
        engines=tuple(
            EngineSpec(
                path=root / _field(engine, "path", str, where),
                key=str(engine.get("key", "")),
                flavour=_field(engine, "flavour", str, where),
                trt_version=_field(engine, "trt_version", str, where),
                compute_capabilities=tuple(str(cc) for cc in engine.get("compute_capabilities") or ()),
                static=bool(engine.get("static", False)),
                sha256=engine.get("sha256"),
            )
            for engine in entry.get("engines") or ()
        ),
    )
