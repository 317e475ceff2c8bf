"""Offline batches: every line of a prompt file -> PNGs in a folder plus ``parameters.jsonl``, resumable.

A prompt file holds one prompt per line, or JSON objects (one :class:`GenerationRequest` per line, with
its own settings); blank lines are skipped, and a line's number (from 0, counting every line) names its
images: ``000012.png`` (``000012_1.png``.. for several). Lines without a seed get ``seed + line``, so a
rerun draws the same images. ``parameters.jsonl`` gets one line per finished prompt after its images are
written; a rerun skips the prompts listed there whose files exist, and refuses a folder made by another
model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from genrt.errors import InputError
from genrt.fileio import write_bytes_atomic
from genrt.runtime.png import png_bytes
from genrt.serve.call import JobResult, generate_batch, pipeline_defaults
from genrt.serve.limits import limits_for
from genrt.serve.request import GenerationRequest, Job, make_job
from genrt.serve.settings import ServeSettings

PARAMETERS_FILE = "parameters.jsonl"


def read_prompts(path: str | Path, defaults: dict[str, Any], base_seed: int) -> list[tuple[int, GenerationRequest]]:
    """(line number, request) for every non-blank line; ``defaults`` fill what a line leaves out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist", fix="pass --prompts FILE with one prompt per line")
    requests = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not text.strip():
            continue
        where = f"{path.name} line {number + 1}"
        if text.lstrip().startswith("{"):
            given = GenerationRequest.from_text(text, where)
        else:
            given = GenerationRequest(prompt=text.strip())
        changes = {name: value for name, value in defaults.items() if getattr(given, name) is None}
        request = dataclasses.replace(given, **changes)
        requests.append((number, request if request.seed is not None else
                         dataclasses.replace(request, seed=base_seed + number)))
    if not requests:
        raise InputError(f"prompt file {path} has no prompts", fix="write one prompt (or JSON object) per line")
    return requests


def finished_lines(out: Path, manifest_sha256: str) -> set[int]:
    """Lines of an earlier run in ``out`` whose images all exist; refuses another model's folder."""
    path = out / PARAMETERS_FILE
    if not path.is_file():
        return set()
    done = set()
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that prompt runs again
        theirs = record["parameters"]["manifest_sha256"]
        if theirs != manifest_sha256:
            raise InputError(f"{out} holds images of another model (manifest {theirs[:12]})",
                             fix="pass a new --out folder")
        if all((out / name).is_file() for name in record["files"]):
            done.add(int(record["line"]))
    return done


def group(jobs: Sequence[tuple[int, Job]], max_rows) -> list[list[tuple[int, Job]]]:
    """Consecutive jobs of equal batch key, at most ``max_rows(job)`` images per group, in order."""
    groups: list[list[tuple[int, Job]]] = []
    rows = 0
    for line, job in jobs:
        current = groups[-1] if groups else None
        if current and current[0][1].batch_key == job.batch_key and rows + job.rows <= max_rows(job):
            current.append((line, job))
            rows += job.rows
        else:
            groups.append([(line, job)])
            rows = job.rows
    return groups


def encode(line: int, job: Job, result: JobResult, manifest_sha256: str) -> dict[str, Any]:
    """A finished prompt as written: file names, PNG bytes and its parameters record."""
    parameters = job.parameters(manifest_sha256)
    names = [f"{line:06d}.png"] if job.rows == 1 else [f"{line:06d}_{index}.png" for index in range(job.rows)]
    pngs = [png_bytes(image, {**parameters, "index": index}) for index, image in enumerate(result.images)]
    return {"line": line, "files": names, "pngs": pngs, "parameters": parameters, "timings": result.timings}


def write(out: Path, finished: Iterable[dict[str, Any]]) -> int:
    """Write each finished prompt's PNGs, then its ``parameters.jsonl`` line (flushed); images written."""
    count = 0
    with open(out / PARAMETERS_FILE, "a", encoding="utf-8") as log:
        for record in finished:
            for name, png in zip(record["files"], record["pngs"]):
                write_bytes_atomic(out / name, png)
            log.write(json.dumps({key: record[key] for key in ("line", "files", "parameters", "timings")}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            count += len(record["files"])
    return count


def records(pipe: Any, settings: ServeSettings, todo: Sequence[tuple[int, GenerationRequest]],
            manifest_sha256: str) -> Iterator[list[dict[str, Any]]]:
    """The finished prompts of ``todo`` [(line, request)], one list per pipeline call (see :func:`encode`)."""
    defaults = pipeline_defaults(pipe, pipe.family, settings.sampler)
    limits = limits_for(pipe.manifest, defaults, settings.max_batch, settings.max_images,
                        settings.max_prompt_chars, settings.max_steps)
    jobs = []
    for line, request in todo:
        try:
            jobs.append((line, make_job(request, pipe.family, defaults, limits)))
        except InputError as exc:
            raise InputError(f"prompt line {line + 1}: {exc.message}", fix=exc.fix) from None
    for batch in group(jobs, lambda job: limits.max_rows(job.guided)):
        results = generate_batch(pipe, pipe.family, [job for _, job in batch])
        yield [encode(line, job, result, manifest_sha256) for (line, job), result in zip(batch, results)]


def generate_lines(pipe: Any, settings: ServeSettings, todo: Sequence[tuple[int, GenerationRequest]], out: Path,
                   manifest_sha256: str, advance: Callable[[int], object]) -> int:
    """Generate and write ``todo`` with ``pipe``; ``advance(images)`` after each call; images written."""
    written = 0
    for finished in records(pipe, settings, todo, manifest_sha256):
        count = write(out, finished)
        advance(count)
        written += count
    return written
