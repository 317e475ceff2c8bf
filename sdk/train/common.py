"""Pieces every demo recipe (``genrt.sdk.train.recipes``) shares: per-step random generators, the learning-rate
schedule and the command line that turns a recipe's integer fields into options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
"""The real tokenizers and LPIPS heads the recipes train with (copied from ``../shared/fixtures``; see its README)."""


def generator(seed: int, phase: int, step: int) -> torch.Generator:
    """The generator of one (seed, phase, step): a resumed run draws what an uninterrupted one drew.

    The three are hashed into 32 bits (numpy's SeedSequence): torch's CPU generator keeps only the low 32 bits
    of its seed, so ``(seed, phase) << 32 | step`` gave every seed and phase the same draws.
    """
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, phase, step]).generate_state(1)[0]))


def cosine_lr(optimizer: torch.optim.Optimizer, peak: float, step: int, total: int, warmup: int = 50) -> None:
    """Linear warm-up over ``warmup`` steps to ``peak``, then cosine down to 5% of it at ``total``."""
    if step < warmup:
        lr = peak * (step + 1) / warmup
    else:
        lr = peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1))))
    for group in optimizer.param_groups:
        group["lr"] = lr


def recipe_main(argv: list[str] | None, prog: str, description: str, defaults: Any, int_fields: Sequence[str],
                out_help: str, run: Callable[[Path, Any, float | None], dict]) -> int:
    """``prog --out DIR [--minutes N] [--<field> N ...]``: ``run(out, recipe, minutes)`` with the recipe dataclass
    ``defaults`` given the integer fields passed; prints its summary as JSON."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--minutes", type=float, default=None, help="wall-time budget of all phases")
    for name in int_fields:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(defaults, **{name: getattr(args, name) for name in int_fields})
    print(json.dumps(run(args.out, recipe, args.minutes), indent=2))
    return 0


class Budget:
    """A run's wall-time budget (``minutes`` None: unlimited), started at construction. Also pins torch to one
    thread and seeds it: on a shared, loaded 2-core machine a second thread only waits."""

    def __init__(self, minutes: float | None, seed: int):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        self.started = time.perf_counter()
        self.deadline = None if minutes is None else self.started + 60.0 * minutes

    def left(self, share: float) -> float | None:
        """Seconds a phase may use: ``share`` of what is left (None when unlimited)."""
        return None if self.deadline is None else max(0.0, (self.deadline - time.perf_counter()) * share)

    def seconds(self) -> float:
        return time.perf_counter() - self.started
