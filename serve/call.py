"""The one place where serving meets the runtime pipeline API: its defaults, and one pipeline call for a
batch of compatible jobs.

Each job keeps its own seed inside a shared call: :class:`RowNoise` answers the pipeline's noise draws
(every draw has the batch on its first axis) with each job's rows drawn from that job's own
``numpy.random.Generator(PCG64(seed))``, so a job's images equal those of ``genrt run --seed`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from genrt.errors import InputError
from genrt.families import family as lookup_family
from genrt.serve.request import Job


@dataclass(frozen=True)
class JobResult:
    """The images of one job and the shared call's stage timings."""

    images: np.ndarray  # (num_images, H, W, 3) uint8
    timings: dict[str, float]  # stage -> seconds of the whole batched call, plus "total"
    batch_rows: int  # images in that call


class RowNoise:
    """A NoiseSource whose draws of shape (B, ...) take rows ``[start, start + n)`` from job i's generator."""

    def __init__(self, seeds: Sequence[int], rows: Sequence[int]):
        self._generators = [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]
        self._rows = list(rows)

    def _draw(self, method: str, size: tuple[int, ...], dtype) -> np.ndarray:
        size = tuple(size)
        if not size or size[0] != sum(self._rows):
            raise InputError(f"a noise draw of shape {size} has no batch axis of {sum(self._rows)} rows",
                             fix="serve this model with --max-batch 1")
        return np.concatenate([getattr(generator, method)((rows,) + size[1:], dtype=dtype)
                               for generator, rows in zip(self._generators, self._rows)])

    def standard_normal(self, size: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        return self._draw("standard_normal", size, dtype)

    def random(self, size: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        return self._draw("random", size, dtype)


def pipeline_defaults(pipe: Any, family: str, sampler: str | None) -> dict[str, Any]:
    """What a request gets for each setting it leaves out, and the pipeline's own bounds (max_steps or None,
    size range and step, classes); ``sampler``: the one the server loaded."""
    spec = lookup_family(family)
    if not spec.prompted:  # a prior sampled from class ids (vqgan)
        return {**pipe.defaults, "classes": pipe.condition_vocab_size, "max_steps": None, "size_range": None,
                "size_step": 1}
    common = {"sampler": sampler or pipe.manifest.settings.sampler, "classes": 1, "size_range": None, "size_step": 1}
    if spec.free_size:
        height, width = pipe.default_size
        return {**common, "num_inference_steps": pipe.default_steps, "guidance_scale": pipe.default_guidance,
                "height": height, "width": width, "max_steps": pipe.max_steps, "size_range": pipe.size_range,
                "size_step": pipe.size_step}
    return {**common, "num_inference_steps": None, "guidance_scale": None, "max_steps": None}


def generate_batch(pipe: Any, family: str, jobs: Sequence[Job]) -> list[JobResult]:
    """One pipeline call for ``jobs`` (equal ``batch_key``); their images in order, ``num_images`` each."""
    settings = dict(jobs[0].settings)
    rows = [job.rows for job in jobs]
    noise = RowNoise([job.seed for job in jobs], rows)
    spec = lookup_family(family)
    if not spec.prompted:
        condition = [0 if job.class_id is None else job.class_id for job in jobs for _ in range(job.rows)]
        result = pipe(condition, batch_size=len(condition), temperature=settings["temperature"],
                      top_k=settings["top_k"], top_p=settings["top_p"], generator=noise)
    else:
        prompts = [job.prompt for job in jobs for _ in range(job.rows)]
        negatives = [job.negative_prompt or "" for job in jobs for _ in range(job.rows)]
        size = {"height": settings["height"], "width": settings["width"]} if spec.free_size else {}
        result = pipe(prompts, negatives, num_inference_steps=settings["num_inference_steps"],
                      guidance_scale=settings["guidance_scale"], generator=noise, **size)
    bounds = np.cumsum([0] + rows)
    return [JobResult(images=result.images[start:stop], timings=dict(result.timings), batch_rows=int(bounds[-1]))
            for start, stop in zip(bounds[:-1], bounds[1:])]
