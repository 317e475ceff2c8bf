"""Build one TensorRT engine per component of an export folder.

Two flavours: ``tensorrt`` (the standard builder; needs the GPU it builds for) and ``tensorrt_rtx``
(builds for chosen compute capabilities, also without a GPU). Networks are strongly typed: the
ONNX graph's dtypes decide the precision, nothing else. Dynamic engines get one optimization
profile from the manifest's min/opt/max; ``static`` engines are fixed to the opt shapes.

Engines are cached: the file name holds a key, the sha256 of (ONNX hash, build settings, flavour
and version, compute capabilities, profile). A rebuild with unchanged inputs finds the file and is a
no-op (a cache hit). Engines are written atomically, so a failed build never replaces a good one.
Standard TensorRT keeps a persistent timing cache (``DIR/timing-tensorrt.cache``) that speeds up
rebuilds; TensorRT-RTX has none (its timing-cache calls are deprecated no-ops: it tunes kernels at
run time instead). Each build writes ``COMPONENT/build-<key>.log``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genrt.errors import GenrtError, InputError, require
from genrt.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from genrt.export.manifest import read_manifest, verified_onnx, write_manifest
from genrt.runtime.manifest import sha256_of

log = logging.getLogger(__name__)

# Flavour -> (Python module, genrt extra that installs it).
FLAVOURS = {"tensorrt": ("tensorrt", "trt"), "tensorrt_rtx": ("tensorrt_rtx", "trt-rtx")}
# Compute capabilities TensorRT-RTX can target -> ComputeCapability member names.
RTX_COMPUTE_CAPABILITIES = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89", "12.0": "SM120", "12.1": "SM121"}


@dataclass(frozen=True)
class BuildSettings:
    """How to build engines; every field enters the cache key."""

    flavour: str = "tensorrt_rtx"  # "tensorrt" or "tensorrt_rtx"
    compute_capabilities: tuple[str, ...] = ("8.6",)  # tensorrt_rtx targets; () for standard TensorRT
    static: bool = False  # fix every input to its opt shape instead of a min..max profile
    opt_level: int = 3  # builder optimization level, 0 (fast build) .. 5 (slow build, fast engine)
    workspace_gb: float | None = None  # cap on the builder's scratch memory; None = TensorRT's default

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise InputError(f"unknown TensorRT flavour {self.flavour!r}", fix=f"use one of {', '.join(FLAVOURS)}")
        if not 0 <= self.opt_level <= 5:
            raise InputError(f"--opt-level {self.opt_level} is out of range", fix="use 0..5")
        if self.workspace_gb is not None and self.workspace_gb <= 0:
            raise InputError(f"--workspace {self.workspace_gb} GB is not positive", fix="give a size in GB > 0")
        if self.flavour == "tensorrt_rtx":
            unknown = [cc for cc in self.compute_capabilities if cc not in RTX_COMPUTE_CAPABILITIES]
            if unknown or not self.compute_capabilities:
                raise InputError(
                    f"TensorRT-RTX cannot target compute capabilities {unknown or '(none)'}",
                    fix=f"choose from {', '.join(RTX_COMPUTE_CAPABILITIES)}",
                )
        elif self.compute_capabilities:
            raise InputError(
                "standard TensorRT builds for the GPU it runs on; it takes no --compute-capability",
                fix="drop --compute-capability, or use --trt tensorrt_rtx",
            )


@dataclass(frozen=True)
class BuildResult:
    """One component's engine after :func:`build_engines`."""

    component: str  # component name
    path: Path  # the engine file
    key: str  # cache key (sha256 hex)
    cache_hit: bool  # True: the engine existed and nothing was built
    seconds: float  # build time (0 for a cache hit)


def resolve_flavour(requested: str) -> str:
    """'auto' -> standard TensorRT where it is installed and a GPU exists, else TensorRT-RTX."""
    if requested != "auto":
        return requested
    import importlib.util

    import torch

    has_trt = importlib.util.find_spec("tensorrt") is not None
    return "tensorrt" if has_trt and torch.cuda.is_available() else "tensorrt_rtx"


def cache_key(onnx_sha256: str, settings: BuildSettings, trt_version: str, profile: dict) -> str:
    payload = {"onnx": onnx_sha256, "settings": asdict(settings), "trt_version": trt_version, "profile": profile}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _logger_class(trt):
    class CollectingLogger(trt.ILogger):
        """Keeps every builder message (for the build log) and forwards warnings and errors."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg):
            self.lines.append(f"[{severity.name}] {msg}")
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                log.error("TensorRT: %s", msg)

    return CollectingLogger


def _build_one(trt, onnx_path: Path, profile: dict, settings: BuildSettings, timing_cache: Path, logger):
    """Serialized engine bytes of one ONNX graph, or a GenrtError naming the first builder error."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse {onnx_path}: {errors}", fix="re-export the component")
    config = builder.create_builder_config()
    config.builder_optimization_level = settings.opt_level
    if settings.workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    if settings.flavour == "tensorrt_rtx":
        config.num_compute_capabilities = len(settings.compute_capabilities)
        for index, cc in enumerate(settings.compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, RTX_COMPUTE_CAPABILITIES[cc]), index)
    if settings.flavour == "tensorrt":
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=True)
    optimization_profile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        low, opt, high = (shapes["opt"],) * 3 if settings.static else (shapes["min"], shapes["opt"], shapes["max"])
        optimization_profile.set_shape(name, low, opt, high)
    if profile:
        config.add_optimization_profile(optimization_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        first_error = next((line for line in logger.lines if line.startswith("[ERROR]")), "no error message")
        raise GenrtError(f"TensorRT failed to build {onnx_path}: {first_error}", fix="see the build log beside it")
    if settings.flavour == "tensorrt":
        write_bytes_atomic(timing_cache, memoryview(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_engines(
    directory: str | Path, settings: BuildSettings, components: list[str] | None = None
) -> list[BuildResult]:
    """Build (or find cached) engines for ``components`` (default: all) and record them in the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    module_name, extra = FLAVOURS[settings.flavour]
    trt = require(module_name, extra=extra)
    if settings.flavour == "tensorrt":
        import torch

        if not torch.cuda.is_available():
            raise InputError("standard TensorRT needs an NVIDIA GPU to build", fix="use --trt tensorrt_rtx")
    names = components or list(manifest["components"])
    results = []
    for name in names:
        onnx_path = verified_onnx(directory, manifest, name)
        entry = manifest["components"][name]
        key = cache_key(entry["sha256"], settings, trt.__version__, entry["profile"])
        engine_rel = f"{name}/engine-{key[:16]}.plan"
        engine_path = directory / engine_rel
        recorded = [e for e in entry.get("engines", []) if e["key"] != key]
        if engine_path.is_file():
            results.append(BuildResult(name, engine_path, key, cache_hit=True, seconds=0.0))
            log.info("%s: engine cache hit (%s)", name, engine_rel)
        else:
            logger = _logger_class(trt)()
            start = time.perf_counter()
            try:
                data = _build_one(trt, onnx_path, entry["profile"], settings,
                                  directory / f"timing-{settings.flavour}.cache", logger)
            finally:
                write_text_atomic(directory / f"{name}/build-{key[:16]}.log", "\n".join(logger.lines) + "\n")
            with atomic_path(engine_path) as tmp:
                tmp.write_bytes(data)
            seconds = time.perf_counter() - start
            results.append(BuildResult(name, engine_path, key, cache_hit=False, seconds=seconds))
            log.info("%s: built %s in %.2f s", name, engine_rel, seconds)
        entry["engines"] = recorded + [{
            "path": engine_rel,
            "key": key,
            "flavour": settings.flavour,
            "trt_version": trt.__version__,
            "compute_capabilities": list(settings.compute_capabilities),
            "static": settings.static,
            "sha256": sha256_of(engine_path),
        }]
    write_manifest(directory, manifest)
    return results
