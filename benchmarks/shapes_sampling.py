"""One image per shapes caption from any pipeline, deterministic by seed, timed call by call.

Image ``i`` is one pipeline call on caption ``i`` alone with seed ``seed + i``, so it depends on its caption
and seed only (not on the batch profile or on which other captions run), and each call's wall time is the
latency of one image at batch 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from genrt.adherence import AdherenceScore, adheres, score


@dataclass(frozen=True)
class CaptionRun:
    """Images of one run over captions, with their scores and timings."""

    captions: tuple[str, ...]
    images: np.ndarray  # (N, H, W, 3) uint8, one per caption
    seconds: tuple[float, ...]  # wall time of each image's call

    @property
    def score(self) -> AdherenceScore:
        return score(self.images, self.captions)

    @property
    def verdicts(self) -> list[bool]:
        return [adheres(image, caption) for image, caption in zip(self.images, self.captions)]

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds))


def sample_captions(generate: Callable[[str, int], np.ndarray], captions: Sequence[str], seed: int) -> CaptionRun:
    """``generate(caption, seed) -> (H, W, 3) uint8`` over ``captions`` with seeds ``seed``, ``seed + 1``, ..."""
    images, seconds = [], []
    for index, caption in enumerate(captions):
        start = time.perf_counter()
        images.append(np.asarray(generate(caption, seed + index)))
        seconds.append(time.perf_counter() - start)
    return CaptionRun(tuple(captions), np.stack(images), tuple(seconds))


def runtime_generator(pipe, **call_options) -> Callable[[str, int], np.ndarray]:
    """``generate(caption, seed)`` of a ``genrt.runtime`` pipeline, with e.g. ``num_inference_steps``."""
    return lambda caption, seed: pipe(prompt=[caption], seed=seed, **call_options).images[0]
