"""``genrt batch --ray``: the prompts of a file on Ray Data, ``map_batches`` over actors that each hold one
pipeline (and GPU, with ``--gpus-per-actor``); this process writes the images and ``parameters.jsonl`` as
the results stream back, so resuming works as for a local run (``genrt.serve.offline``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Callable

import numpy as np

from genrt.errors import require
from genrt.serve.request import GenerationRequest
from genrt.serve.settings import ServeSettings
from genrt.typedjson import to_json


class GenerateActor:
    """A Ray Data actor: one pipeline; a batch of {"line", "request"} rows -> {"record"}: JSON of each
    finished prompt (``genrt.serve.offline.encode``, PNGs in base64)."""

    def __init__(self, directory: str, settings: ServeSettings, manifest_sha256: str):
        from genrt.serve.service import load_pipeline

        self._pipe = load_pipeline(directory, settings)
        self._settings = settings
        self._manifest_sha256 = manifest_sha256

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from genrt.serve.offline import records

        todo = [(int(line), GenerationRequest.from_text(text))
                for line, text in zip(batch["line"], batch["request"])]
        finished = [record for call in records(self._pipe, self._settings, todo, self._manifest_sha256)
                    for record in call]
        kept = ("line", "files", "parameters", "timings")
        texts = [json.dumps({**{key: record[key] for key in kept},
                             "pngs": [base64.b64encode(png).decode("ascii") for png in record["pngs"]]})
                 for record in finished]
        return {"record": np.array(texts, dtype=object)}


def run_on_ray(directory: Path, settings: ServeSettings, todo: list[tuple[int, GenerationRequest]], out: Path,
               manifest_sha256: str, actors: int, gpus_per_actor: float, advance: Callable[[int], object]) -> int:
    """Generate ``todo`` on ``actors`` Ray Data actors; write as results arrive; images written."""
    data = require("ray.data", "ray")
    from genrt.serve.offline import write
    from genrt.serve.ray_app import init_ray

    if not todo:
        return 0
    init_ray()
    rows = [{"line": line, "request": json.dumps(to_json(request))} for line, request in todo]
    dataset = data.from_items(rows).map_batches(
        GenerateActor, fn_constructor_kwargs={"directory": str(directory.resolve()), "settings": settings,
                                              "manifest_sha256": manifest_sha256},
        batch_size=settings.max_batch, concurrency=actors, num_gpus=gpus_per_actor, batch_format="numpy")
    written = 0
    for row in dataset.iter_rows():
        record = json.loads(row["record"])
        record["pngs"] = [base64.b64decode(text) for text in record["pngs"]]
        count = write(out, [record])
        advance(count)
        written += count
    return written
