"""A small training loop: progress bar, EMA of the weights, periodic checkpoints, resume, loss curve.

``train(model, optimizer, step_fn, config)`` runs ``step_fn(step) -> loss`` (a scalar tensor with a graph)
for steps ``state.step .. config.steps - 1``: zero_grad, backward, optional gradient clipping, optimiser
step, EMA update. Every ``checkpoint_every`` steps (and at the end, or when ``max_seconds`` ran out) it
writes ``<out>/checkpoints/step_<N>.pt`` holding model, optimizer, EMA, step and the loss history, and
``<out>/loss.png``. Started again with the same ``out`` it resumes from the latest checkpoint.

Resume is exact when ``step_fn`` draws all its randomness from the step number (e.g. a
``torch.Generator`` seeded with ``(seed, step)`` and dataset indices computed from the step), which the
recipes do: an interrupted and resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from genrt.errors import CheckpointError, InputError
from genrt.fileio import write_bytes_atomic

CHECKPOINT_NAME = re.compile(r"step_(\d+)\.pt")


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    After n updates: shadow <- d * shadow + (1 - d) * param with d = min(decay, (1 + n) / (10 + n))
    when ``warmup`` (LDM's ``LitEma``), else d = decay.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay is {decay}", fix="pass a decay in [0, 1), e.g. 0.999")
        self.decay = decay  # the asymptotic decay
        self.warmup = warmup  # ramp the decay up over the first updates
        self.num_updates = 0  # updates so far
        self.shadow = {name: p.detach().clone() for name, p in module.state_dict().items() if p.is_floating_point()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        for name, value in module.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(value.detach(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's weights with the averages (before saving or sampling)."""
        state = module.state_dict()
        for name, value in self.shadow.items():
            state[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise CheckpointError("the checkpoint's EMA holds other tensors than the model",
                                  fix="resume with the model the checkpoint was trained with, or another --out")
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


@dataclass(frozen=True)
class LoopConfig:
    """What the loop runs and where it writes."""

    out: Path  # folder for checkpoints/ and loss.png
    steps: int  # total optimiser steps (a resumed run continues up to this)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    ema_decay: float | None = 0.999  # None: no EMA
    grad_clip: float | None = 1.0  # max gradient norm, None: no clipping
    max_seconds: float | None = None  # stop (with a checkpoint) after this much wall time in this call
    description: str = "train"  # progress-bar label
    progress: bool = True  # show the tqdm bar (stderr)


@dataclass
class TrainState:
    """What a run has done so far (returned by :func:`train`)."""

    step: int = 0  # optimiser steps done
    losses: list[float] = field(default_factory=list)  # one per step done
    ema: EMA | None = None  # the average (None when ema_decay is None)
    seconds: float = 0.0  # wall time of this call's steps
    steps_this_call: int = 0  # steps run in this call (resume skips the others)

    @property
    def steps_per_second(self) -> float:
        return self.steps_this_call / self.seconds if self.seconds > 0 else float("nan")


def checkpoint_folder(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint with the highest step under ``<out>/checkpoints``, or None."""
    folder = checkpoint_folder(Path(out))
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := CHECKPOINT_NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    buffer = io.BytesIO()
    torch.save({"step": state.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": state.ema.state_dict() if state.ema is not None else None, "losses": list(state.losses)},
               buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}", fix="delete it to resume from the one before") from None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if state.ema is not None:
        if saved["ema"] is None:
            raise CheckpointError(f"{path} has no EMA but the loop keeps one", fix="resume with the same ema_decay")
        state.ema.load_state_dict(saved["ema"])
    state.step, state.losses = int(saved["step"]), list(saved["losses"])


def _prune(out: Path, keep: int) -> None:
    found = sorted((int(m.group(1)), p) for p in checkpoint_folder(out).glob("step_*.pt")
                   if (m := CHECKPOINT_NAME.fullmatch(p.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def write_loss_curve(losses: list[float], path: str | Path, title: str = "loss", smooth: int = 50) -> Path:
    """Plot ``losses`` (log scale, raw in grey and a running mean of ``smooth`` steps in blue) as a PNG."""
    from PIL import Image, ImageDraw

    path = Path(path)
    width, height, margin = 640, 360, 48
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    values = [v for v in losses if math.isfinite(v) and v > 0]
    draw.text((margin, 8), f"{title}: {len(losses)} steps" + (f", last mean {_mean_tail(losses, smooth):.4g}"
                                                             if values else ""), fill=(0, 0, 0))
    draw.rectangle((margin, margin, width - 8, height - margin), outline=(0, 0, 0))
    if values:
        low, high = math.log10(min(values)), math.log10(max(values))
        high = high if high > low else low + 1.0
        span = max(len(losses) - 1, 1)

        def point(i: int, v: float) -> tuple[float, float]:
            x = margin + (width - 8 - margin) * i / span
            y = height - margin - (height - 2 * margin) * (math.log10(max(v, 10 ** low)) - low) / (high - low)
            return x, y

        raw = [point(i, v) for i, v in enumerate(losses) if math.isfinite(v) and v > 0]
        if len(raw) > 1:
            draw.line(raw, fill=(190, 190, 190), width=1)
        running, total = [], 0.0
        for i, v in enumerate(losses):
            total += v
            if i >= smooth:
                total -= losses[i - smooth]
            running.append(point(i, total / min(i + 1, smooth)))
        if len(running) > 1:
            draw.line(running, fill=(30, 80, 220), width=2)
        draw.text((4, margin), f"{10 ** high:.3g}", fill=(0, 0, 0))
        draw.text((4, height - margin - 10), f"{10 ** low:.3g}", fill=(0, 0, 0))
        draw.text((margin, height - margin + 6), "step 0", fill=(0, 0, 0))
        draw.text((width - 80, height - margin + 6), f"step {len(losses)}", fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _mean_tail(losses: list[float], n: int) -> float:
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def train(model: nn.Module, optimizer: torch.optim.Optimizer, step_fn: Callable[[int], torch.Tensor],
          config: LoopConfig) -> TrainState:
    """Run the loop (see the module docstring); returns the state after the last step."""
    from tqdm import tqdm

    if config.steps < 0 or config.checkpoint_every < 1:
        raise InputError(f"steps {config.steps}, checkpoint_every {config.checkpoint_every}",
                         fix="pass steps >= 0 and checkpoint_every >= 1")
    out = Path(config.out)
    checkpoint_folder(out).mkdir(parents=True, exist_ok=True)
    state = TrainState(ema=EMA(model, config.ema_decay) if config.ema_decay is not None else None)
    latest = latest_checkpoint(out)
    if latest is not None:
        load_checkpoint(latest, model, optimizer, state)
    parameters = [p for p in model.parameters() if p.requires_grad]

    def checkpoint() -> None:
        save_checkpoint(checkpoint_folder(out) / f"step_{state.step:08d}.pt", model, optimizer, state)
        _prune(out, config.keep_checkpoints)
        write_loss_curve(state.losses, out / "loss.png", config.description)

    bar = tqdm(total=config.steps, initial=state.step, desc=config.description, disable=not config.progress,
               file=sys.stderr, mininterval=5.0, dynamic_ncols=False)
    start = time.perf_counter()
    last_saved = state.step
    model.train()
    try:
        while state.step < config.steps:
            loss = step_fn(state.step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            if state.ema is not None:
                state.ema.update(model)
            state.losses.append(float(loss.detach()))
            state.step += 1
            state.steps_this_call += 1
            bar.update(1)
            if state.step % 10 == 0:
                bar.set_postfix(loss=f"{_mean_tail(state.losses, 50):.4g}", refresh=False)
            if state.step % config.checkpoint_every == 0:
                checkpoint()
                last_saved = state.step
            if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                break
    finally:
        state.seconds = time.perf_counter() - start
        bar.close()
    if state.step != last_saved or latest is None:
        checkpoint()
    return state
