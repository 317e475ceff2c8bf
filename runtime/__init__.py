"""genrt.runtime: load an export folder and generate images, with numpy and an engine backend.

>>> pipe = genrt.runtime.load("out/sd15", backend="auto")
>>> result = pipe("a photograph of an astronaut riding a horse", seed=0)
>>> result.to_pil()[0].save("astronaut.png"); result.timings

Never imports torch (tests check this in a process where torch cannot be imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from genrt.errors import InputError
from genrt.families import family
from genrt.manifest import Manifest, ManifestError, read_manifest
from genrt.runtime.backends.ort_options import OrtOptions
from genrt.runtime.pipelines.common import GenerationResult, Pipeline, RunnerOptions
from genrt.runtime.pipelines.imagen import ImagenPipeline
from genrt.runtime.pipelines.ldm import LatentDiffusionPipeline
from genrt.runtime.pipelines.vqgan import VQGANPipeline


def load(directory: str | Path, backend: str = "auto", *, device_id: int = 0, threads: int = 0,
         ort_options: OrtOptions = OrtOptions(), resident: bool | None = None, sampler: str | Callable | None = None,
         cuda_graphs: bool = True) -> Pipeline:
    """The pipeline of the family exported in ``directory`` (a :class:`LatentDiffusionPipeline`,
    :class:`VQGANPipeline` or :class:`ImagenPipeline`), with its runners opened on ``backend``.

    ``device_id``: the GPU of the CUDA backends. ``threads``: ONNX Runtime CPU threads (0: its default).
    ``ort_options``: ONNX Runtime session options of every session (``OrtOptions(spinning=..., memory_arena=...,
    optimization=...)``; the defaults are the measured ones, see ``genrt.runtime.backends.ort_options``).
    ``resident``: keep the sampling loop's state on the device (None: on the GPU backends, ``onnxruntime-cuda``
    and ``tensorrt``). ``cuda_graphs=False``: GPU calls run without CUDA graphs (``runner.cuda_graphs`` says how
    each component runs). ``sampler``: a sampler name of
    ``genrt.sampling`` or a factory (diffusion families; None: the manifest's).
    """
    manifest = read_manifest(directory)
    entry = family(manifest.family, ManifestError)
    if sampler is not None and not entry.denoising:
        raise InputError(f"the {manifest.family} pipeline takes no sampler", fix="drop sampler")
    options = {"sampler": sampler} if entry.denoising else {}
    runners = RunnerOptions(backend=backend, device_id=device_id, threads=threads, resident=resident,
                            cuda_graphs=cuda_graphs, ort_options=ort_options)
    return entry.pipeline_class()(manifest, runners, **options)


__all__ = ["GenerationResult", "ImagenPipeline", "LatentDiffusionPipeline", "Manifest", "OrtOptions", "Pipeline",
           "RunnerOptions", "VQGANPipeline", "load", "read_manifest"]
