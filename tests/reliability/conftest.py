"""Session fixtures of the reliability suite: tiny export folders made once, shared read-only by the cases.

The runtime folders come from ``tests.runtime.tiny_pipelines`` (toy modules, hand-written manifests:
milliseconds per call); the build folder is a real ``export_folder`` of the toy components.
"""

from __future__ import annotations

import dataclasses

import pytest

from genrt.export.folder import FamilyExport, export_folder
from genrt.settings import VqganSettings
from tests.export.toy import toy_encoder_spec, toy_unet_spec
from tests.runtime.tiny_pipelines import build_imagen, build_ldm, build_vqgan

# The toy components are exported as a vqgan folder; no pipeline reads these settings.
TOY_SETTINGS = VqganSettings(downsample_factor=4, n_embed=16, image_size=16, block_size=17, n_condition_tokens=1,
                             condition_vocab_size=1, n_layer=1, n_head=1, head_dim=4)


def toy_plan(**module_hooks) -> FamilyExport:
    """The toy encoder + U-Net plan; ``module_hooks[name]()`` runs when that component's module is made."""
    specs = {spec.name: spec for spec in (toy_encoder_spec(), toy_unet_spec())}
    for name, hook in module_hooks.items():
        made = specs[name].module
        specs[name] = dataclasses.replace(specs[name], module=lambda made=made, hook=hook: (hook(), made())[1])
    return FamilyExport(family="vqgan", config="toy", components=specs, settings=TOY_SETTINGS)


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict:
    """family -> a tiny export folder the runtime can run."""
    root = tmp_path_factory.mktemp("folders")
    return {"ldm": build_ldm(root / "ldm"), "vqgan": build_vqgan(root / "vqgan"), "imagen": build_imagen(root / "imagen")}


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory):
    """A real export folder of the toy components (what `genrt build` and `genrt parity` take)."""
    out = tmp_path_factory.mktemp("toy") / "export"
    export_folder(toy_plan(), out, "fp32")
    return out
