"""Assertions the shipped-model tests share: adherence through the runtime, and the fp32 runtime's images."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from genrt.adherence import score

MIN_ADHERENCE = 0.9  # of the 36 captions, at the folder's default sampler and steps
FP16_POINTS = 0.05  # how far fp16 (or the runtime) may sit from the PyTorch reference's rate
FP32_LEVELS = 2  # of 255: the fp32 runtime's images against the sdk reference's on the same noise


def check_adherence(precision: str, images: np.ndarray, reference: np.ndarray, captions: Sequence[str],
                    size: int) -> None:
    """images, reference: (N, size, size, 3) uint8, one per caption: rate >= 90% and within 5 points of torch's."""
    result, reference_result = score(images, captions), score(reference, captions)
    assert images.shape == (len(captions), size, size, 3) and images.dtype == np.uint8
    assert result.rate >= MIN_ADHERENCE, (precision, result)
    assert abs(result.rate - reference_result.rate) <= FP16_POINTS, (precision, result, reference_result)


def check_fp32_images(precision: str, images: np.ndarray, reference: np.ndarray) -> None:
    """The fp32 runtime's uint8 images equal the reference's within 2/255 (fp16 is held to its rate only)."""
    if precision != "fp32":
        pytest.skip("the 2/255 bound is the fp32 one")
    difference = np.abs(images.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= FP32_LEVELS, difference.max()
