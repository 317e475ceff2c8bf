"""Build one TensorRT engine per component of an export folder.

Two flavours: ``tensorrt`` (the standard builder; needs the GPU it builds for) and ``tensorrt_rtx``
(builds for chosen compute capabilities, also without a GPU). Networks are strongly typed: the
ONNX graph's dtypes decide the precision, nothing else. Dynamic engines get one optimization
profile from the manifest's min/opt/max; ``static`` engines are fixed to the opt shapes.

Engines are cached: the file name holds a key, the sha256 of (ONNX hash, build settings, flavour
and version, compute capabilities, profile). A rebuild with unchanged inputs is a no-op (a cache hit)
only if the file's sha256 is the one recorded when it was built and, where this machine's GPU is
among its targets, the engine deserializes (TensorRT-RTX: ``Runtime.get_engine_validity``); any other
file is rebuilt. Engines are written atomically, so a failed or interrupted build (Ctrl-C stops it:
``build_control``) never replaces a good one. fp32 graphs are built with TF32 off, so they keep fp32
accuracy. Which GPUs a build targets is decided in ``targets``.
Standard TensorRT keeps a persistent timing cache (``DIR/timing-tensorrt.cache``) that speeds up
rebuilds; TensorRT-RTX has none (its timing-cache calls are deprecated no-ops: it tunes kernels at
run time instead). Each build writes ``COMPONENT/build-<key>.log``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from genrt.errors import GenrtError, InputError, require
from genrt.export.build_control import build_log, cancel_monitor, interruptible, run_build
from genrt.runtime.backends.trt_logger import shared_logger
from genrt.export.targets import RTX_COMPUTE_CAPABILITIES, build_targets, local_compute_capability
from genrt.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from genrt.lock import locked
from genrt.manifest import EngineRecord, read_manifest, replace_component, write_manifest
from genrt.typedjson import to_json

log = logging.getLogger(__name__)

# Flavour -> (Python module, genrt extra that installs it).
FLAVOURS = {"tensorrt": ("tensorrt", "trt"), "tensorrt_rtx": ("tensorrt_rtx", "trt-rtx")}


@dataclass(frozen=True)
class BuildSettings:
    """How to build engines; every field enters the cache key."""

    flavour: str = "tensorrt_rtx"  # "tensorrt" or "tensorrt_rtx"
    compute_capabilities: tuple[str, ...] = ("8.6",)  # tensorrt_rtx targets; standard TensorRT: () = this GPU
    static: bool = False  # fix every input to its opt shape instead of a min..max profile
    opt_level: int = 3  # builder optimization level, 0 (fast build) .. 5 (slow build, fast engine)
    workspace_gb: float | None = None  # cap on the builder's scratch memory; None = TensorRT's default

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise InputError(f"unknown TensorRT flavour {self.flavour!r}", fix=f"use one of {', '.join(FLAVOURS)}")
        if not 0 <= self.opt_level <= 5:
            raise InputError(f"--opt-level {self.opt_level} is out of range", fix="use 0..5")
        if self.workspace_gb is not None and not 0 < self.workspace_gb < math.inf:
            raise InputError(f"--workspace {self.workspace_gb} GB is not a positive finite size",
                             fix="give a size in GB > 0")
        if self.flavour == "tensorrt_rtx":
            build_targets(self.flavour, self.compute_capabilities, None)  # refuses what TensorRT-RTX cannot target


@dataclass(frozen=True)
class BuildResult:
    """One component's engine after :func:`build_engines`."""

    component: str  # component name
    path: Path  # the engine file
    key: str  # cache key (sha256 hex)
    cache_hit: bool  # True: the engine existed and nothing was built
    seconds: float  # build time (0 for a cache hit)


def cache_key(onnx_sha256: str, settings: BuildSettings, trt_version: str, profile: dict, tf32: bool) -> str:
    payload = {"onnx": onnx_sha256, "settings": asdict(settings), "trt_version": trt_version, "profile": profile,
               "tf32": tf32}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _deserializes(trt, data: bytes) -> bool:
    """Whether this machine's GPU can load the engine ``data`` (TensorRT-RTX asks get_engine_validity first)."""
    runtime = trt.Runtime(shared_logger(trt))
    if hasattr(runtime, "get_engine_validity"):
        validity, _ = runtime.get_engine_validity(data)
        if validity == trt.EngineValidity.INVALID:
            return False
    return runtime.deserialize_cuda_engine(data) is not None


def _verified_cache_hit(trt, engine_path: Path, record: EngineRecord | None, local: str | None) -> bool:
    """A cached engine counts only if it is the file recorded at its build and (on a target GPU) it loads."""
    if record is None or record.sha256 is None or not engine_path.is_file():
        return False
    data = engine_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.sha256:
        log.warning("%s does not match the engine recorded at its build: rebuilding it", engine_path)
        return False
    if local is None or local not in record.compute_capabilities:
        return True  # no GPU it runs on here: the recorded hash is the check
    if not _deserializes(trt, data):
        log.warning("%s does not load on this GPU: rebuilding it", engine_path)
        return False
    return True


def _build_one(trt, onnx_path: Path, profile: dict, settings: BuildSettings, timing_cache: Path, logger,
               lines: list[str], tf32: bool, monitor):
    """Serialized engine bytes of one ONNX graph, or a GenrtError naming the first builder error."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse {onnx_path}: {errors}", fix="re-export the component")
    config = builder.create_builder_config()
    config.builder_optimization_level = settings.opt_level
    config.progress_monitor = monitor
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
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
        first_error = next((line for line in lines if line.startswith("[ERROR]")), "no error message")
        raise GenrtError(f"TensorRT failed to build {onnx_path}: {first_error}", fix="see the build log beside it")
    if settings.flavour == "tensorrt":
        write_bytes_atomic(timing_cache, memoryview(config.get_timing_cache().serialize()))
    return bytes(serialized)


@locked("build")
def build_engines(
    directory: str | Path, settings: BuildSettings, components: list[str] | None = None,
    on_build: Callable[[str, tuple[str, ...]], None] | None = None,
) -> list[BuildResult]:
    """Build (or find verified cached) engines for ``components`` (default: all) and record them in the manifest.

    ``on_build(component, compute_capabilities)`` is called before each build (not for cache hits).
    Ctrl-C stops the build in progress: KeyboardInterrupt, nothing written for that component, and the
    manifest unchanged.
    """
    manifest = read_manifest(directory)
    if manifest.precision == "int8":
        raise InputError(f"{manifest.root} is an int8 export, made for ONNX Runtime's CPU kernels (its activation "
                         "ranges are not calibrated for TensorRT)", fix="build engines from an fp16 or fp32 export")
    module_name, extra = FLAVOURS[settings.flavour]
    local = local_compute_capability()
    targets = build_targets(settings.flavour, settings.compute_capabilities or None, local)
    settings = dataclasses.replace(settings, compute_capabilities=targets)
    trt = require(module_name, extra=extra)
    tf32 = manifest.precision != "fp32"  # fp32 graphs keep fp32 accuracy (parity bound 1e-4)
    results = []
    with interruptible() as cancelled:
        for name in manifest.component_names(components):
            onnx_path = manifest.verified_onnx(name)
            entry = manifest.component(name)
            profile = to_json(entry.profile)  # {input: {"min": [...], "opt": [...], "max": [...]}}
            key = cache_key(entry.sha256, settings, trt.__version__, profile, tf32)
            engine_rel = f"{name}/engine-{key[:16]}.plan"
            engine_path = manifest.root / engine_rel
            same_key = next((e for e in entry.engines if e.key == key), None)
            recorded = tuple(e for e in entry.engines if e.key != key)
            if _verified_cache_hit(trt, engine_path, same_key, local):
                digest = same_key.sha256
                results.append(BuildResult(name, engine_path, key, cache_hit=True, seconds=0.0))
                log.info("%s: engine cache hit (%s)", name, engine_rel)
            else:
                if on_build is not None:
                    on_build(name, targets)
                start = time.perf_counter()
                with build_log(trt) as (logger, lines):
                    try:
                        data = run_build(lambda: _build_one(
                            trt, onnx_path, profile, settings, manifest.root / f"timing-{settings.flavour}.cache",
                            logger, lines, tf32, cancel_monitor(trt, cancelled)), cancelled)
                    finally:
                        write_text_atomic(manifest.root / f"{name}/build-{key[:16]}.log", "\n".join(lines) + "\n")
                with atomic_path(engine_path) as tmp:
                    tmp.write_bytes(data)
                digest = hashlib.sha256(data).hexdigest()
                seconds = time.perf_counter() - start
                results.append(BuildResult(name, engine_path, key, cache_hit=False, seconds=seconds))
                log.info("%s: built %s in %.2f s", name, engine_rel, seconds)
            manifest = replace_component(manifest, dataclasses.replace(entry, engines=recorded + (EngineRecord(
                path=engine_path,
                key=key,
                flavour=settings.flavour,
                trt_version=trt.__version__,
                compute_capabilities=targets,
                static=settings.static,
                sha256=digest,
            ),)))
    write_manifest(manifest)
    return results
