"""genrt.runtime: load an export folder and generate images, with numpy and an engine backend.

>>> pipe = genrt.runtime.load("out/sd15", backend="auto")
>>> result = pipe("a photograph of an astronaut riding a horse", seed=0)
>>> result.to_pil()[0].save("astronaut.png"); result.timings

Never imports torch (tests check this in a process where torch cannot be imported).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from genrt.runtime.manifest import Manifest, load_manifest

# family -> (module, pipeline class)
PIPELINES = {
    "ldm": ("genrt.runtime.pipelines.ldm", "LatentDiffusionPipeline"),
    "vqgan": ("genrt.runtime.pipelines.vqgan", "VQGANPipeline"),
    "imagen": ("genrt.runtime.pipelines.imagen", "ImagenPipeline"),
}


def load(directory: str | Path, backend: str = "auto", **options):
    """The pipeline of the family exported in ``directory``, with its runners opened on ``backend``.

    ``options`` go to the pipeline (e.g. ``sampler="euler"``, ``threads=4``).
    """
    from genrt.runtime.manifest import ManifestError

    manifest = load_manifest(directory)
    if manifest.family not in PIPELINES:
        raise ManifestError(f"this genrt runtime has no pipeline for the '{manifest.family}' family",
                            fix="upgrade genrt")
    module, name = PIPELINES[manifest.family]
    return getattr(importlib.import_module(module), name)(manifest, backend=backend, **options)


__all__ = ["Manifest", "load", "load_manifest"]
