"""Checks of the numbers and strings a user passes, at the boundary, once (torch-free).

Every command of the ``genrt`` CLI and every runtime pipeline call checks its arguments with these
before any work: type (an int is an ``int`` or numpy integer, never a bool or a float to be
truncated), finiteness, range. A bad value raises one :class:`~genrt.errors.InputError` naming the
argument, the value received, what is allowed and the fix:

``integer(2.7, "num_inference_steps", low=1)`` raises "num_inference_steps is 2.7 (float); expected an int >= 1
(fix: pass num_inference_steps as an int >= 1)".

Seeds: one range for export, parity and the runtime, ``0 .. SEED_MAX`` (what numpy's PCG64 and
torch's ``manual_seed`` both take, and a JSON integer every reader keeps exact).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

from genrt.errors import InputError

SEED_MAX = 2**63 - 1  # largest seed: an int64, accepted by numpy.random.PCG64 and torch.Generator.manual_seed
GUIDANCE_MAX = 100.0  # largest classifier-free guidance scale (typical: 1..30; beyond 100 images saturate)
THREADS_MAX = 1024  # largest CPU thread count a command takes


def _bounds(low: float | None, high: float | None, *, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in ({low}, {high}]" if low_open else f"in [{low}, {high}]"
    if low is not None:
        return f"> {low}" if low_open else f">= {low}"
    return "" if high is None else f"<= {high}"


def _received(value: object) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({type(value).__name__})"


def integer(value: object, name: str, *, low: int | None = None, high: int | None = None,
            fix: str | None = None) -> int:
    """``value`` as an ``int`` within ``low .. high`` (inclusive); an InputError otherwise."""
    expected = " ".join(("an int", _bounds(low, high))).strip()
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} is {_received(value)}; expected {expected}",
                         fix=fix or f"pass {name} as {expected}")
    return int(value)


def number(value: object, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, fix: str | None = None) -> float:
    """``value`` as a finite ``float`` within ``low .. high`` (``low`` excluded when ``low_open``)."""
    expected = " ".join(("a finite number", _bounds(low, high, low_open=low_open))).strip()
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = is_real and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise InputError(f"{name} is {_received(value)}; expected {expected}",
                         fix=fix or f"pass {name} as {expected}")
    return float(value)


def seed(value: object, name: str = "seed") -> int | None:
    """A seed in ``0 .. SEED_MAX``, or None (a random one)."""
    return None if value is None else integer(value, name, low=0, high=SEED_MAX)


def guidance(value: object, name: str = "guidance_scale") -> float:
    """A classifier-free guidance scale in ``0 .. GUIDANCE_MAX`` (1 disables guidance)."""
    return number(value, name, low=0.0, high=GUIDANCE_MAX)


def text(value: object, name: str) -> str:
    """``value`` if it is a ``str``."""
    if not isinstance(value, str):
        raise InputError(f"{name} is {_received(value)}; expected a string", fix=f"pass {name} as a string")
    return value


def flag(value: object, name: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is a ``bool`` (numpy's too), or None when ``optional``."""
    if (value is None and optional) or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    expected = "True, False or None" if optional else "True or False"
    raise InputError(f"{name} is {_received(value)}; expected {expected}", fix=f"pass {name} as {expected}")


def choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise InputError(f"{name} is {_received(value)}; expected one of {', '.join(allowed)}",
                         fix=f"pass {name} as one of {', '.join(allowed)}")
    return value


def multiple(value: object, name: str, step: int, low: int, high: int) -> int:
    """An int within ``low .. high`` that ``step`` divides (image sizes against a model's down-sampling)."""
    expected = f"a multiple of {step} in [{low}, {high}]"
    size = integer(value, name, fix=f"pass {name} as {expected}")
    if size % step or not low <= size <= high:
        raise InputError(f"{name} is {size}; expected {expected}", fix=f"pass {name} as {expected}")
    return size
