"""``DIR/manifest.json``, the one description of an export folder: typed, versioned, written atomically.

Export (``genrt export``), the engine builder (``genrt build``), parity (``genrt parity``), the runtime
and the tests all read with :func:`read_manifest` and write with :func:`write_manifest`; nothing else
touches the file. The schema is in docs/contracts.md. One version rule: a folder of another
``schema_version`` than :data:`SCHEMA_VERSION` (older or newer) is refused with the fix "re-export".
Unknown keys and wrong types are refused by name (:mod:`genrt.typedjson`). Paths are relative to the
folder in the file and absolute in memory; :func:`verified_file` checks a graph's or engine's sha256
before a backend opens it. Torch-free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import genrt
from genrt.errors import GenrtError
from genrt.families import family as lookup_family
from genrt.fileio import write_text_atomic
from genrt.settings import FamilySettings
from genrt.typedjson import from_json, to_json

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
# int8: float32 tensors; the components the family registry names (genrt.families.Family.int8) statically quantised
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# numpy dtype names a manifest may use for a tensor.
DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool", "uint8")
# Bytes read at a time when hashing a graph or engine (engines reach several GB).
HASH_CHUNK = 1 << 22
REEXPORT = "re-export the model with `genrt export` (export/README.md, 'Manifest schema versions')"


class ManifestError(GenrtError):
    """An export folder that cannot be used: missing, of another schema, malformed, or with corrupt files."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a component."""

    name: str  # tensor name in the ONNX graph / engine
    dtype: str  # numpy dtype name, one of DTYPES
    shape: tuple[int | str, ...]  # ints are fixed sizes, strings are symbols ("B", "h") or expressions ("8*h")

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ManifestError(f"tensor '{self.name}' has unknown dtype '{self.dtype}'", fix=REEXPORT)


@dataclass(frozen=True)
class ShapeRange:
    """The min/opt/max shapes an engine profile accepts for one input."""

    min: tuple[int, ...]  # smallest size per axis
    opt: tuple[int, ...]  # size the engine was tuned for
    max: tuple[int, ...]  # largest size per axis

    def __post_init__(self):
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ManifestError(f"shape range {self.min} / {self.opt} / {self.max} mixes ranks", fix=REEXPORT)


# The flavour of an ``EngineRecord`` that is not a TensorRT engine but the component's graph fused for ONNX Runtime
# CUDA (``genrt build --trt onnxruntime-cuda``, export/cuda_fusion.py): COMPONENT/model-cuda-<key>.onnx.
FUSED_GRAPH_FLAVOUR = "onnxruntime-cuda"


@dataclass(frozen=True)
class EngineRecord:
    """A TensorRT / TensorRT-RTX engine built from a component's ONNX graph, or its fused ONNX Runtime CUDA graph
    (flavour ``FUSED_GRAPH_FLAVOUR``)."""

    path: Path  # the .plan file (the fused .onnx file)
    key: str  # build cache key (graph hash + build options)
    flavour: str  # "tensorrt", "tensorrt_rtx" or FUSED_GRAPH_FLAVOUR
    trt_version: str  # version of the library that built it (ONNX Runtime's for a fused graph); loads only in that one
    compute_capabilities: tuple[str, ...]  # GPUs it runs on, e.g. ("8.6", "8.9"); standard TensorRT: its build GPU
    static: bool  # built for exactly one shape (profile min == opt == max): CUDA graphs apply
    sha256: str | None = None  # hex digest of the .plan file


@dataclass(frozen=True)
class NodeCounts:
    """ONNX node counts around the graph clean-up (onnxslim)."""

    exported: int  # nodes of the graph torch.onnx wrote
    cleaned: int  # nodes after the clean-up


@dataclass(frozen=True)
class ComponentEntry:
    """One exported network (text encoder, U-Net, decoder, prior...) and its engines."""

    name: str = field(metadata={"key": True})  # key in ``components``, e.g. "unet"; not written inside the entry
    onnx: Path  # the .onnx graph
    external_data: Path | None  # weights file beside a >2 GB graph, or None
    sha256: str  # hex digest of the .onnx file
    inputs: tuple[TensorSpec, ...]  # in graph order
    outputs: tuple[TensorSpec, ...]  # in graph order
    profile: dict[str, ShapeRange] = field(default_factory=dict)  # input name -> shape range, inputs with symbols
    fp32_islands: tuple[str, ...] = ()  # op kinds kept in float32 under a half-precision or int8 export
    engines: tuple[EngineRecord, ...] = ()  # built engines, possibly for several GPUs
    nodes: NodeCounts | None = None  # graph size before and after clean-up (None: not recorded)

    def __post_init__(self):
        for input_name, shape_range in self.profile.items():
            spec = next((item for item in self.inputs if item.name == input_name), None)
            if spec is None or len(shape_range.min) != len(spec.shape):
                raise ManifestError(f"component '{self.name}': profile for '{input_name}' does not match its inputs",
                                    fix=REEXPORT)

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)

    @property
    def tensorrt_engines(self) -> tuple[EngineRecord, ...]:
        """The TensorRT / TensorRT-RTX engines among ``engines``."""
        return tuple(engine for engine in self.engines if engine.flavour != FUSED_GRAPH_FLAVOUR)

    @property
    def fused_graphs(self) -> tuple[EngineRecord, ...]:
        """The fused ONNX Runtime CUDA graphs among ``engines``, oldest first."""
        return tuple(engine for engine in self.engines if engine.flavour == FUSED_GRAPH_FLAVOUR)


@dataclass(frozen=True)
class ParityPoint:
    """One (shape point, output) comparison against PyTorch."""

    max_abs: float  # max |backend - reference|; for indices the fraction of differing entries
    rel: float  # max_abs / max |reference|; for indices the fraction of differences outside near ties
    passed: bool


@dataclass(frozen=True)
class ParityRecord:
    """A component's parity on one backend: the worst point, and every point ("opt/model_output")."""

    max_abs: float  # worst max_abs over points and outputs
    rel: float  # worst rel over points and outputs
    tolerance: float  # bound rel had to stay under
    passed: bool  # every point passed
    points: dict[str, ParityPoint] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportRecord:
    """How the export was made (genrt.export.options.ExportOptions), so `genrt parity` can rebuild it."""

    batch: tuple[int, ...] | None  # [min, opt, max] images per call, None: the family's default
    resolution: tuple[int, ...] | None  # [min, opt, max] pixels, None: the family's default
    sequence_length: tuple[int, ...] | None  # [min, opt, max] tokens, None: the family's default
    checkpoint: str | None  # absolute weights path, None for random weights
    checkpoint_sr: str | None  # imagen: absolute DeepFloyd IF stage II folder
    tokenizer: str | None  # absolute tokenizer folder the user passed
    random_weights: bool  # randomly initialised weights
    seed: int  # seed of the random weights


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest of the export folder ``root``."""

    root: Path = field(metadata={"json": False})  # the export folder (absolute); not written
    family: str  # a name of genrt.families.FAMILIES
    config: str  # model config name, e.g. "sd15" or "tiny"
    precision: str  # "fp32", "fp16", "bf16" (dtype of the float tensors) or "int8" (float32, some quantised)
    components: dict[str, ComponentEntry]  # component name -> entry, in export order
    settings: FamilySettings  # the family's settings class (genrt.settings)
    parity: dict[str, dict[str, ParityRecord]] = field(default_factory=dict)  # component -> backend -> record
    export_options: ExportRecord | None = None  # None: written by hand (tests), parity cannot rebuild it
    schema_version: int = SCHEMA_VERSION
    genrt_version: str = genrt.__version__  # genrt version that wrote the folder

    def __post_init__(self):
        settings = lookup_family(self.family, ManifestError).settings
        if not isinstance(self.settings, settings):
            raise ManifestError(f"the {self.family} manifest carries {type(self.settings).__name__}, "
                                f"not {settings.__name__}", fix=REEXPORT)
        if self.precision not in PRECISIONS:
            raise ManifestError(f"unknown precision '{self.precision}'", fix=REEXPORT)

    def component(self, name: str) -> ComponentEntry:
        if name not in self.components:
            raise ManifestError(
                f"{self.root}: the {self.family} export has no component '{name}' "
                f"(it has {', '.join(self.components) or 'none'})",
                fix=f"export again with `genrt export` including '{name}'",
            )
        return self.components[name]

    def component_names(self, names: list[str] | None) -> list[str]:
        """``names`` (None: every component), refusing those that are not components, all in one message."""
        unknown = [name for name in names or [] if name not in self.components]
        if unknown:
            raise ManifestError(f"unknown component(s) {', '.join(unknown)} in {self.root}",
                                fix=f"choose from {', '.join(self.components)}")
        return list(dict.fromkeys(names)) if names else list(self.components)

    def verified_onnx(self, name: str) -> Path:
        """The component's ONNX file after checking that it exists and has the recorded sha256."""
        entry = self.component(name)
        return verified_file(entry.onnx, entry.sha256, fix="re-run `genrt export --force` to write a consistent folder")

    def path(self, relative: str) -> Path:
        """An existing file or folder named relative to the export folder (e.g. the tokenizer)."""
        path = (self.root / relative).resolve()
        if not path.exists():
            raise ManifestError(f"{self.root}: '{relative}' listed in manifest.json is missing",
                                fix="export the folder again with `genrt export`")
        return path

    def to_json(self) -> dict:
        return to_json(self, self.root)

    @classmethod
    def from_json(cls, data: Any, root: Path) -> "Manifest":
        """Parse ``data`` (the JSON of ``root/manifest.json``); a ManifestError names what is wrong."""
        where = str(root / MANIFEST_FILE)
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a JSON object", fix="pass a folder written by `genrt export`")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where} has schema_version {version!r}; this genrt {genrt.__version__} reads schema_version "
                f"{SCHEMA_VERSION}", fix=REEXPORT)
        if not isinstance(data.get("family"), str):
            raise ManifestError(f"{where} names no family", fix=REEXPORT)
        settings = lookup_family(data["family"], ManifestError).settings
        return from_json(cls, data, f"{where}:", lambda message: ManifestError(message, fix=REEXPORT), root=root,
                         context={"root": root}, override={"settings": settings})


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of an export folder; a ManifestError for a missing, unparsable or foreign one."""
    root = Path(directory).resolve()
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{directory} has no {MANIFEST_FILE}", fix="pass a folder written by `genrt export`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc})", fix=REEXPORT) from None
    return Manifest.from_json(data, root)


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` atomically to ``manifest.root/manifest.json`` (readers see the old or the new file)."""
    path = manifest.root / MANIFEST_FILE
    write_text_atomic(path, json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def replace_component(manifest: Manifest, entry: ComponentEntry) -> Manifest:
    """``manifest`` with ``entry`` in place of the component of the same name (order kept)."""
    return dataclasses.replace(manifest, components={**manifest.components, entry.name: entry})


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
