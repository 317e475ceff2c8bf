"""Session fixtures of the reliability suite: tiny export folders made once, shared read-only by the cases.

The runtime folders come from ``tests.runtime.tiny`` (toy modules, hand-written manifests:
milliseconds per call); the build folder is a real ``export_folder`` of the toy components.
"""

from __future__ import annotations

import dataclasses

import pytest

from genrt.export.folder import FamilyExport, export_folder
from tests.export import toy
from tests.runtime.tiny.imagen import build_imagen
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan


def toy_plan(**module_hooks) -> FamilyExport:
    """The toy encoder + U-Net plan; ``module_hooks[name]()`` runs when that component's module is made."""
    specs = {spec.name: spec for spec in (toy.toy_encoder_spec(), toy.toy_unet_spec())}
    for name, hook in module_hooks.items():
        made = specs[name].module
        specs[name] = dataclasses.replace(specs[name], module=lambda made=made, hook=hook: (hook(), made())[1])
    return toy.toy_plan(specs=list(specs.values()))


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict:
    """family -> a tiny export folder the runtime can run."""
    root = tmp_path_factory.mktemp("folders")
    return {"ldm": build_ldm(root / "ldm"), "vqgan": build_vqgan(root / "vqgan"), "imagen": build_imagen(root / "imagen")}


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory):
    """A real export folder of the toy components (what `genrt build` and `genrt parity` take)."""
    out = tmp_path_factory.mktemp("toy") / "export"
    export_folder(toy_plan(), out)
    return out
