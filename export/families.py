"""The exportable model families: name -> module with ``plan(config, precision, options)``.

Each family module (:mod:`genrt.export.ldm`, :mod:`~genrt.export.vqgan`, :mod:`~genrt.export.imagen`)
defines ``FAMILY``, ``config_names()`` and ``plan(...) -> FamilyExport``; it is
imported only when its family is used (each pulls in its sdk package and torch).
"""

from __future__ import annotations

import importlib

from genrt.errors import InputError

FAMILY_MODULES = {"ldm": "genrt.export.ldm", "vqgan": "genrt.export.vqgan", "imagen": "genrt.export.imagen"}


def family_module(family: str):
    """The spec module of ``family``, or an InputError naming the known families."""
    if family not in FAMILY_MODULES:
        raise InputError(f"unknown model family {family!r}", fix=f"use one of {', '.join(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[family])


def family_plan(family: str, config: str | None, precision: str, options):
    """The :class:`~genrt.export.folder.FamilyExport` of ``family``/``config`` for ``precision`` and ``options``.

    ``config`` None: the family takes it from the checkpoint where it can (ldm pipeline folders).
    """
    module = family_module(family)
    if config is None and options.checkpoint is None:
        raise InputError("no --config given", fix=f"pass --config with one of {', '.join(module.config_names())}")
    if config is not None and config not in module.config_names():
        raise InputError(f"unknown {family} config {config!r}", fix=f"use one of {', '.join(module.config_names())}")
    return module.plan(config, precision, options)


def plan_from_manifest(manifest: dict):
    """Rebuild the plan an export folder was written from (its ``export_options``), for parity."""
    from genrt.export.options import ExportOptions

    recorded = manifest.get("export_options")
    if not recorded:
        raise InputError(
            "this export folder does not record how its weights were made",
            fix="re-export it with `genrt export` (which records the options that parity needs)",
        )
    options = ExportOptions.from_json(recorded)
    config = manifest["config"]
    if options.checkpoint is not None and config not in family_module(manifest["family"]).config_names():
        config = None  # named after the checkpoint folder: the checkpoint carries the config
    return family_plan(manifest["family"], config, manifest["precision"], options)
