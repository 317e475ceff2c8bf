"""The one place tests write manifest.json around :mod:`genrt.manifest`: to make files the module itself never
writes (another schema version, an unknown family, a wrong type), which the readers must refuse by name. Every
valid manifest a test writes goes through ``genrt.manifest.write_manifest``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def rewrite_manifest(folder: Path, change: dict | Callable[[dict], object]) -> None:
    """Edit ``folder/manifest.json`` as raw JSON: merge ``change`` into its top level (a dict), or call ``change``
    on the parsed document, which it edits in place."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    if isinstance(change, dict):
        data.update(change)
    else:
        change(data)
    path.write_text(json.dumps(data))
