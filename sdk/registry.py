"""Named-config registries: one lookup with one error for every model family."""

from __future__ import annotations

from typing import Mapping, TypeVar

from genrt.errors import ConfigError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """``registry[name]``, or a ConfigError naming the ``kind`` of config and listing the known names."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} config {name!r}", fix=f"use one of {', '.join(sorted(registry))}")
    return registry[name]
