"""Classifier-free guidance (Ho & Salimans 2022) and dynamic thresholding (Saharia et al. 2022, "Imagen")."""

from __future__ import annotations

import torch

from genrt.errors import InputError


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + w (eps_cond - eps_uncond): two (B, ...) outputs -> (B, ...)."""
    if uncond.shape != cond.shape:
        raise InputError(
            f"guidance outputs differ in shape: {tuple(uncond.shape)} vs {tuple(cond.shape)}",
            fix="pass the unconditional and conditional outputs of the same batch",
        )
    return uncond + scale * (cond - uncond)


def batch_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-quantile with linear interpolation (as ``torch.quantile``): (B, N) -> (B,).

    Written with sort and gather only, so it also traces to ONNX (torch.quantile does not) and works on
    rows longer than torch.quantile's 16M-element limit.
    """
    n = values.shape[1]
    ordered = values.sort(dim=1).values  # (B, N) ascending
    position = q * (n - 1)
    low = int(position)  # floor, position >= 0
    high = min(low + 1, n - 1)
    fraction = position - low
    return ordered[:, low] + fraction * (ordered[:, high] - ordered[:, low])


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995, max_value: float | None = None) -> torch.Tensor:
    """Imagen's dynamic thresholding of a predicted x_0: (B, ...) -> (B, ...), same dtype.

    Per sample s = quantile(|x_0|, percentile) over all non-batch dims, s = max(s, 1) (and
    s = min(s, max_value) when given, DeepFloyd IF uses 1.5); then x_0 is clamped to [-s, s] and divided by s.
    """
    if not 0.0 < percentile <= 1.0:
        raise InputError(f"dynamic threshold percentile is {percentile}", fix="pass a fraction in (0, 1], e.g. 0.995")
    if max_value is not None and max_value < 1.0:
        raise InputError(f"dynamic threshold max_value is {max_value}", fix="pass a value >= 1 or None")
    batch = x0.shape[0]
    work = x0 if x0.dtype in (torch.float32, torch.float64) else x0.float()  # half: quantile in float32
    s = batch_quantile(work.abs().reshape(batch, -1), percentile)  # (B,)
    s = s.clamp(min=1.0) if max_value is None else s.clamp(min=1.0, max=max_value)
    s = s.reshape((batch,) + (1,) * (x0.dim() - 1))  # (B, 1, ..., 1)
    return (torch.minimum(torch.maximum(work, -s), s) / s).to(x0.dtype)
