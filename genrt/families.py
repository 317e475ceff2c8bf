"""The model families, registered once: export, runtime, CLI and benchmarks look a family up here.

A :class:`Family` names its settings class (the manifest's ``settings`` block), its export module
(torch; imported only when exporting) and its runtime pipeline class (torch-free; imported only when
loading), and says what a pipeline call takes, so callers never branch on the family's name.
Importing this module imports neither torch nor the runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from genrt.errors import InputError
from genrt.settings import ImagenSettings, LdmSettings, VqganSettings


@dataclass(frozen=True)
class Family:
    """One exportable, runnable model family."""

    name: str  # "ldm", "vqgan" or "imagen": the manifest's ``family``, the `genrt export FAMILY` argument
    settings: type  # its settings dataclass (genrt.settings), the manifest's ``settings``
    export_module: str  # defines ``config_names()`` and ``plan(config, precision, options) -> FamilyExport``
    pipeline_path: str  # "module:Class" of the runtime pipeline
    prompted: bool  # a call takes text prompts (else class ids of a prior)
    free_size: bool  # a call takes the output height and width in pixels
    denoising: bool  # a call takes a sampler and a number of denoising steps
    cascade: bool  # a call may stop after its first ``stages`` stages
    checkpoint_sr: bool  # `genrt export --checkpoint-sr` (a second-stage checkpoint folder) applies
    denoisers: tuple[str, ...]  # components run once per step (or per code): what benchmarks compile
    generation: tuple[str, ...]  # components one generation call uses (a cascade: with every stage)
    class_prompts: bool = False  # a prompt may name a prior's class (one of the export's class_names)
    # components an int8 export quantises (genrt.export.quantize: ONNX Runtime's int8 CPU kernels measured faster);
    # its other components stay float32. () refuses --precision int8.
    int8: tuple[str, ...] = ()

    def component_precision(self, precision: str, component: str) -> str:
        """What ``component`` of a ``precision`` export is: "int8" (quantised) or "fp32" under an int8 export,
        else ``precision`` itself."""
        if precision != "int8":
            return precision
        return "int8" if component in self.int8 else "fp32"

    def generation_components(self, stages: int) -> list[str]:
        """What one generation call uses; a cascade stopped after its first ``stages`` stages uses fewer."""
        if not self.cascade:
            return list(self.generation)
        kept = self.denoisers[:stages]
        return [name for name in self.generation if name not in self.denoisers or name in kept]

    def export(self):
        """The family's export module (imports torch and the family's sdk package)."""
        return importlib.import_module(self.export_module)

    def pipeline_class(self) -> type:
        """The family's runtime pipeline class (torch-free)."""
        module, name = self.pipeline_path.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("ldm", LdmSettings, "genrt.export.ldm", "genrt.runtime.pipelines.ldm:LatentDiffusionPipeline",
               prompted=True, free_size=True, denoising=True, cascade=False, checkpoint_sr=False,
               denoisers=("unet",), generation=("text_encoder", "unet", "vae_decoder"), int8=("unet",)),
        Family("vqgan", VqganSettings, "genrt.export.vqgan", "genrt.runtime.pipelines.vqgan:VQGANPipeline",
               prompted=False, free_size=False, denoising=False, cascade=False, checkpoint_sr=False,
               denoisers=("prior",), generation=("decoder", "prior"), class_prompts=True),
        Family("imagen", ImagenSettings, "genrt.export.imagen", "genrt.runtime.pipelines.imagen:ImagenPipeline",
               prompted=True, free_size=False, denoising=True, cascade=True, checkpoint_sr=True,
               denoisers=("base_unet", "sr_unet_256", "sr_unet_1024"),
               generation=("t5_encoder", "base_unet", "sr_unet_256", "sr_unet_1024")),
    )
}


def family(name: str, error: type[InputError] = InputError) -> Family:
    """The registered family ``name``, or ``error`` naming the known ones."""
    if name not in FAMILIES:
        raise error(f"unknown model family {name!r}", fix=f"use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
