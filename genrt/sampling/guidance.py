"""Classifier-free guidance (Ho & Salimans 2022) and dynamic thresholding (Saharia et al. 2022, "Imagen"),
for numpy arrays and torch tensors alike."""

from __future__ import annotations

from genrt.errors import InputError
from genrt.sampling.arrays import ops_of


def classifier_free_guidance(uncond, cond, scale: float):
    """eps_uncond + w (eps_cond - eps_uncond): two (B, ...) outputs -> (B, ...), dtype kept."""
    if uncond.shape != cond.shape:
        raise InputError(
            f"guidance outputs differ in shape: {tuple(uncond.shape)} vs {tuple(cond.shape)}",
            fix="pass the unconditional and conditional outputs of the same batch",
        )
    return uncond + float(scale) * (cond - uncond)


def batch_quantile(values, q: float):
    """Per-row q-quantile with linear interpolation (as ``torch.quantile`` / ``numpy.quantile``): (B, N) -> (B,).

    Written with sort and indexing only, so it also traces to ONNX (torch.quantile does not) and works on
    rows longer than torch.quantile's 16M-element limit.
    """
    n = values.shape[1]
    ordered = ops_of(values).sort_rows(values)  # (B, N) ascending
    position = q * (n - 1)
    low = int(position)  # floor, position >= 0
    high = min(low + 1, n - 1)
    fraction = position - low
    return ordered[:, low] + fraction * (ordered[:, high] - ordered[:, low])


def dynamic_threshold(x0, percentile: float = 0.995, max_value: float | None = None):
    """Imagen's dynamic thresholding of a predicted x_0: (B, ...) -> (B, ...), same dtype.

    Per sample s = quantile(|x_0|, percentile) over all non-batch dims, s = max(s, 1) (and
    s = min(s, max_value) when given, DeepFloyd IF uses 1.5); then x_0 is clamped to [-s, s] and divided by s.
    """
    if not 0.0 < percentile <= 1.0:
        raise InputError(f"dynamic threshold percentile is {percentile}", fix="pass a fraction in (0, 1], e.g. 0.995")
    if max_value is not None and max_value < 1.0:
        raise InputError(f"dynamic threshold max_value is {max_value}", fix="pass a value >= 1 or None")
    ops = ops_of(x0)
    batch = x0.shape[0]
    work = ops.float_work(x0)  # half precision: quantile in float32
    s = batch_quantile(abs(work).reshape(batch, -1), percentile)  # (B,)
    s = ops.clip(s, 1.0, float("inf") if max_value is None else float(max_value))
    s = s.reshape((batch,) + (1,) * (ops.ndim(x0) - 1))  # (B, 1, ..., 1)
    return ops.to_dtype(ops.clip(work, -s, s) / s, x0)
