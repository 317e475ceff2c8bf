"""Classifier-free guidance (Ho & Salimans 2022) and dynamic thresholding (Saharia et al. 2022, "Imagen")
in numpy. Mirror of ``genrt.sdk.diffusion.guidance``."""

from __future__ import annotations

import numpy as np

from genrt.errors import InputError


def classifier_free_guidance(uncond: np.ndarray, cond: np.ndarray, scale: float) -> np.ndarray:
    """eps_uncond + w (eps_cond - eps_uncond): two (B, ...) outputs -> (B, ...), dtype kept."""
    if uncond.shape != cond.shape:
        raise InputError(
            f"guidance outputs differ in shape: {tuple(uncond.shape)} vs {tuple(cond.shape)}",
            fix="pass the unconditional and conditional outputs of the same batch",
        )
    return uncond + np.asarray(scale, dtype=uncond.dtype) * (cond - uncond)


def batch_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Per-row q-quantile with linear interpolation (as ``numpy.quantile``'s default): (B, N) -> (B,)."""
    n = values.shape[1]
    ordered = np.sort(values, axis=1)  # (B, N) ascending
    position = q * (n - 1)
    low = int(position)  # floor, position >= 0
    high = min(low + 1, n - 1)
    fraction = position - low
    return ordered[:, low] + fraction * (ordered[:, high] - ordered[:, low])


def dynamic_threshold(x0: np.ndarray, percentile: float = 0.995, max_value: float | None = None) -> np.ndarray:
    """Imagen's dynamic thresholding of a predicted x_0: (B, ...) -> (B, ...), same dtype.

    Per sample s = quantile(|x_0|, percentile) over all non-batch dims, s = max(s, 1) (and
    s = min(s, max_value) when given, DeepFloyd IF uses 1.5); then x_0 is clamped to [-s, s] and divided by s.
    """
    if not 0.0 < percentile <= 1.0:
        raise InputError(f"dynamic threshold percentile is {percentile}", fix="pass a fraction in (0, 1], e.g. 0.995")
    if max_value is not None and max_value < 1.0:
        raise InputError(f"dynamic threshold max_value is {max_value}", fix="pass a value >= 1 or None")
    batch = x0.shape[0]
    work = x0 if x0.dtype in (np.float32, np.float64) else x0.astype(np.float32)  # half: quantile in float32
    s = batch_quantile(np.abs(work).reshape(batch, -1), percentile)  # (B,)
    s = np.clip(s, 1.0, max_value)  # max_value None: no upper bound
    s = s.reshape((batch,) + (1,) * (x0.ndim - 1)).astype(work.dtype)  # (B, 1, ..., 1)
    return (np.clip(work, -s, s) / s).astype(x0.dtype)
