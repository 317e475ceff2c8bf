"""PNG files that carry how they were made: the generation parameters as JSON in an ``iTXt`` chunk.

``png_bytes(image, generation_parameters(DIR, prompt=..., seed=...))``; ``png_parameters(data)`` reads them back.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

PARAMETERS_KEY = "parameters"  # the text chunk's keyword


def manifest_sha256(directory: str | Path) -> str:
    """Hex sha256 of ``directory/manifest.json``: names the exact model an image came from."""
    return hashlib.sha256((Path(directory) / "manifest.json").read_bytes()).hexdigest()


def generation_parameters(directory: str | Path, **values: Any) -> dict[str, Any]:
    """``values`` that are not None, plus the ``manifest_sha256`` of the export folder ``directory``."""
    return {**{name: value for name, value in values.items() if value is not None},
            "manifest_sha256": manifest_sha256(directory)}


def png_bytes(image: np.ndarray, parameters: dict[str, Any]) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes with ``parameters`` as JSON (UTF-8) under the keyword ``parameters``."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMETERS_KEY, json.dumps(parameters, sort_keys=True))
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image), mode="RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_parameters(data: bytes) -> dict[str, Any]:
    """The parameters written by :func:`png_bytes` ({} when the PNG has none)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        text = image.text.get(PARAMETERS_KEY)
    return {} if text is None else json.loads(text)
