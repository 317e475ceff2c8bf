"""Frozen dataclasses <-> JSON, refusing unknown keys, missing keys and wrong types by name.

The manifest and the family settings are written and read through :func:`to_json` / :func:`from_json`
only (the model is diffusers' ``ConfigMixin``: constructor arguments in, JSON out). Field types map to
JSON like this: ``int``, ``float`` (an int is accepted), ``str``, ``bool``; ``X | None``; ``tuple[X, ...]``
(a list); ``dict[str, X]`` / ``Mapping[str, X]`` (an object); a nested dataclass (an object with exactly its
fields; fields with defaults may be absent); ``Path`` (a string relative to ``root``, absolute in memory).
A field with ``metadata={"key": True}`` holds the key its object has in the enclosing mapping (a
component's name) and is not written; a field with ``metadata={"json": False}`` is not written and is
filled from ``context`` when read.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from genrt.errors import GenrtError

_NONE = type(None)


def to_json(value: Any, root: Path | None = None) -> Any:
    """``value`` (a dataclass, or anything inside one) as plain JSON types; ``Path`` relative to ``root``."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name), root) for f in dataclasses.fields(value)
                if not f.metadata.get("key") and f.metadata.get("json", True)}
    if isinstance(value, Path):
        return (value.relative_to(root) if root is not None else value).as_posix()
    if isinstance(value, (tuple, list)):
        return [to_json(item, root) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_json(item, root) for key, item in value.items()}
    return value


def from_json(cls: type, data: Any, where: str, error: Callable[[str], GenrtError], root: Path | None = None,
              context: Mapping[str, Any] | None = None, override: Mapping[str, Any] | None = None) -> Any:
    """An instance of dataclass ``cls`` from JSON ``data``; ``error(message)`` for any mismatch.

    ``where`` names the place in messages (``"DIR/manifest.json:"``, extended to ``DIR/manifest.json:
    components.unet``); ``override`` replaces the declared type of some fields (the family's settings class).
    """
    return _decode(cls, data, where, error, root, context or {}, override or {}, key=None)


def _decode(kind: Any, data: Any, where: str, error, root, context, override, key) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not _NONE]
        if data is None and len(options) < len(args):
            return None
        for option in options:
            try:
                return _decode(option, data, where, error, root, context, {}, key)
            except GenrtError:
                continue
        raise error(f"{where} is {_describe(data)}, expected {_name(kind)}")
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, data, where, error, root, context, override, key)
    if origin is tuple:
        if not isinstance(data, list):
            raise error(f"{where} is {_describe(data)}, expected a list")
        return tuple(_decode(args[0], item, f"{where}[{i}]", error, root, context, {}, None)
                     for i, item in enumerate(data))
    if origin in (dict, collections.abc.Mapping) or kind in (dict, Mapping):
        if not isinstance(data, dict):
            raise error(f"{where} is {_describe(data)}, expected an object")
        value_kind = args[1] if args else Any
        return {name: _decode(value_kind, item, _join(where, name), error, root, context, {}, name)
                for name, item in data.items()}
    if kind is Path:
        if not isinstance(data, str):
            raise error(f"{where} is {_describe(data)}, expected a path string")
        return (root / data) if root is not None else Path(data)
    if kind is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if kind in (int, str, bool) and isinstance(data, kind) and (kind is bool or not isinstance(data, bool)):
        return data
    raise error(f"{where} is {_describe(data)}, expected {_name(kind)}")


def _decode_dataclass(cls: type, data: Any, where: str, error, root, context, override, key) -> Any:
    if not isinstance(data, dict):
        raise error(f"{where} is {_describe(data)}, expected an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    written = {name for name, f in fields.items() if not f.metadata.get("key") and f.metadata.get("json", True)}
    unknown = sorted(set(data) - written)
    if unknown:
        raise error(f"{where} has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(written))})")
    values = {}
    for name, f in fields.items():
        if f.metadata.get("key"):
            values[name] = key
        elif not f.metadata.get("json", True):
            values[name] = context[name]
        elif name in data:
            values[name] = _decode(override.get(name, hints[name]), data[name], _join(where, name), error, root,
                                   context, {}, None)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise error(f"{where} lacks the key '{name}'")
    try:
        return cls(**values)
    except GenrtError as exc:
        raise error(f"{where}: {exc.message}") from None


def _join(where: str, name: str) -> str:
    """``where`` extended by a key: "file.json:" + "a" -> "file.json: a", "file.json: a" + "b" -> "file.json: a.b"."""
    return f"{where} {name}" if where.endswith(":") else f"{where}.{name}"


def _describe(data: Any) -> str:
    text = repr(data)
    return f"{type(data).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
