"""The few array operations a sampler step needs beyond arithmetic, for numpy arrays and torch tensors.

A step is arithmetic with Python floats (``a * x + b * y``), which numpy and torch evaluate alike; the
operations here are the rest: clamping, ``exp``, the per-row sort of dynamic thresholding and the gather of
per-sample schedule values. :func:`ops_of` picks the implementation from the array's type, so this package
never imports torch itself: torch is only touched when a torch tensor comes in (the torch SDK).
"""

from __future__ import annotations

import numpy as np

from genrt.errors import InputError


def check_timesteps(integer: bool, t, count: int) -> None:
    """Refuse timesteps ``t`` (an array or tensor) that are not integers within 0..count-1."""
    if not integer:
        raise InputError(f"timesteps have dtype {t.dtype}", fix="pass integer timesteps")
    if t.numel() if hasattr(t, "numel") else t.size:
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= count:
            raise InputError(f"timesteps span {low}..{high}", fix=f"pass timesteps within 0..{count - 1}")


class NumpyOps:
    """Operations on ``numpy.ndarray``."""

    @staticmethod
    def exp(a):
        return np.exp(a)

    @staticmethod
    def clip(a, low, high):
        """Clamp ``a`` to [low, high]; bounds are floats or arrays broadcasting against ``a``; dtype of ``a``."""
        return np.clip(a, low, high).astype(a.dtype, copy=False)

    @staticmethod
    def sort_rows(a):
        """(B, N) -> (B, N) ascending along the rows."""
        return np.sort(a, axis=1)

    @staticmethod
    def to_dtype(a, like):
        return a.astype(like.dtype, copy=False)

    @staticmethod
    def float_work(a):
        """``a`` in a dtype quantiles and clamps work in: float32/float64 kept, half precision -> float32."""
        return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)

    @staticmethod
    def gather(table: np.ndarray, t, like):
        """table[t] (T,) float64 at integer timesteps ``t`` (int or (B,)), in ``like``'s dtype."""
        t = np.asarray(t)
        check_timesteps(t.dtype.kind in "iu", t, len(table))
        return table[t].astype(like.dtype)

    @staticmethod
    def ndim(a) -> int:
        return a.ndim


class TorchOps:
    """Operations on ``torch.Tensor`` (torch is imported by the caller that made the tensor)."""

    @staticmethod
    def exp(a):
        return a.exp()

    @staticmethod
    def clip(a, low, high):
        import torch

        if isinstance(low, float):
            return a.clamp(low, high)
        return torch.minimum(torch.maximum(a, low), high)

    @staticmethod
    def sort_rows(a):
        return a.sort(dim=1).values

    @staticmethod
    def to_dtype(a, like):
        return a.to(like.dtype)

    @staticmethod
    def float_work(a):
        import torch

        return a if a.dtype in (torch.float32, torch.float64) else a.float()

    @staticmethod
    def gather(table: np.ndarray, t, like):
        import torch

        t = torch.as_tensor(t, device=like.device)
        check_timesteps(not (t.dtype.is_floating_point or t.dtype == torch.bool), t, len(table))
        return torch.from_numpy(table).to(like.device)[t.long()].to(like.dtype)

    @staticmethod
    def ndim(a) -> int:
        return a.dim()


NUMPY_OPS = NumpyOps()
TORCH_OPS = TorchOps()


def ops_of(a):
    """The operations for ``a``: numpy arrays (and numpy scalars) or torch tensors."""
    if isinstance(a, (np.ndarray, np.generic)):
        return NUMPY_OPS
    if type(a).__module__.split(".")[0] == "torch":
        return TORCH_OPS
    raise InputError(f"got a {type(a).__name__} where a sample array belongs", fix="pass a numpy array or a torch tensor")
