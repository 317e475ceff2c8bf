"""Export plans of the registered families (:mod:`genrt.families`).

Each family's export module (:mod:`genrt.export.ldm`, :mod:`~genrt.export.vqgan`, :mod:`~genrt.export.imagen`)
defines ``config_names()`` and ``plan(config, precision, options) -> FamilyExport``; it is imported only
when its family is used (each pulls in its sdk package and torch).
"""

from __future__ import annotations

from genrt.errors import InputError
from genrt.families import family
from genrt.manifest import Manifest


def family_plan(name: str, config: str | None, precision: str, options):
    """The :class:`~genrt.export.folder.FamilyExport` of family ``name``/``config`` for ``precision`` and ``options``.

    ``config`` None: the family takes it from the checkpoint where it can (ldm pipeline folders).
    """
    module = family(name).export()
    if config is None and options.checkpoint is None:
        raise InputError("no --config given", fix=f"pass --config with one of {', '.join(module.config_names())}")
    if config is not None and config not in module.config_names():
        raise InputError(f"unknown {name} config {config!r}", fix=f"use one of {', '.join(module.config_names())}")
    return module.plan(config, precision, options)


def plan_from_manifest(manifest: Manifest):
    """Rebuild the plan an export folder was written from (its ``export_options``), for parity."""
    from genrt.export.options import ExportOptions

    if manifest.export_options is None:
        raise InputError(
            "this export folder does not record how its weights were made",
            fix="re-export it with `genrt export` (which records the options that parity needs)",
        )
    options = ExportOptions.from_record(manifest.export_options)
    config = manifest.config
    if options.checkpoint is not None and config not in family(manifest.family).export().config_names():
        config = None  # named after the checkpoint folder: the checkpoint carries the config
    return family_plan(manifest.family, config, manifest.precision, options)
