"""The shared training loop: exact resume, EMA math, checkpoints, loss curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from genrt.errors import CheckpointError
from genrt.sdk.train.loop import EMA, LoopConfig, latest_checkpoint, train, write_loss_curve


class Crash(RuntimeError):
    pass


def toy(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def step_fn_for(model: nn.Module, crash_at: int | None = None):
    """A regression batch that depends on the step only (as the recipes draw theirs)."""

    def step_fn(step: int) -> torch.Tensor:
        if step == crash_at:
            raise Crash(f"killed at step {step}")
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(16, 4, generator=g)
        y = x.sum(dim=1, keepdim=True).sin()
        return (model(x) - y).pow(2).mean()

    return step_fn


def config(out, steps: int, **changes) -> LoopConfig:
    return LoopConfig(out=out, steps=steps, checkpoint_every=5, ema_decay=0.9, progress=False, **changes)


def test_resume_continues_from_the_saved_step_with_the_same_weights(tmp_path):
    model, optimizer = toy()
    straight = train(model, optimizer, step_fn_for(model), config(tmp_path / "straight", 20))
    assert straight.step == 20 and len(straight.losses) == 20

    interrupted, optimizer2 = toy()
    with pytest.raises(Crash):  # dies after the checkpoint of step 10, in step 13
        train(interrupted, optimizer2, step_fn_for(interrupted, crash_at=13), config(tmp_path / "resumed", 20))
    assert latest_checkpoint(tmp_path / "resumed").name == "step_00000010.pt"

    fresh, optimizer3 = toy(seed=123)  # another initialisation: everything must come from the checkpoint
    resumed = train(fresh, optimizer3, step_fn_for(fresh), config(tmp_path / "resumed", 20))
    assert resumed.steps_this_call == 10  # steps 10..19 only
    assert resumed.step == 20
    assert resumed.losses == straight.losses
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    for name, value in straight.ema.shadow.items():
        assert torch.equal(value, resumed.ema.shadow[name]), name
    assert resumed.ema.num_updates == straight.ema.num_updates == 20
    assert latest_checkpoint(tmp_path / "resumed").name == "step_00000020.pt"


def test_a_finished_run_started_again_does_nothing(tmp_path):
    model, optimizer = toy()
    train(model, optimizer, step_fn_for(model), config(tmp_path, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = train(model, optimizer, step_fn_for(model), config(tmp_path, 10))
    assert again.steps_this_call == 0 and again.step == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checkpoints_are_pruned_to_the_newest(tmp_path):
    model, optimizer = toy()
    train(model, optimizer, step_fn_for(model), config(tmp_path, 17, keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["step_00000015.pt", "step_00000017.pt"]
    saved = torch.load(tmp_path / "checkpoints" / "step_00000017.pt", weights_only=True)
    assert set(saved) == {"step", "model", "optimizer", "ema", "losses"} and saved["step"] == 17


def test_ema_math_with_warmup_and_without():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema = EMA(module, decay=0.5)
    expected = 1.0
    for n, value in enumerate([3.0, -2.0, 5.0, 0.5, 7.0]):
        with torch.no_grad():
            module.weight.fill_(value)
        decay = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.1818.., 0.25, 0.3077.., 0.357..
        expected = decay * expected + (1 - decay) * value
        ema.update(module)
        assert ema.shadow["weight"].item() == pytest.approx(expected, rel=1e-6)
    assert ema.num_updates == 5

    plain = EMA(module, decay=0.75, warmup=False)  # shadow starts at 7.0
    with torch.no_grad():
        module.weight.fill_(-1.0)
    plain.update(module)
    assert plain.shadow["weight"].item() == pytest.approx(0.75 * 7.0 + 0.25 * -1.0)
    plain.copy_to(module)
    assert module.weight.item() == pytest.approx(5.0)


def test_ema_refuses_a_checkpoint_of_another_model():
    ema = EMA(nn.Linear(2, 2))
    other = EMA(nn.Linear(2, 2, bias=False)).state_dict()
    with pytest.raises(CheckpointError, match="EMA"):
        ema.load_state_dict(other)


def test_loss_curve_png_is_written(tmp_path):
    model, optimizer = toy()
    train(model, optimizer, step_fn_for(model), config(tmp_path, 12))
    image = Image.open(tmp_path / "loss.png")
    assert image.format == "PNG" and image.size == (640, 360)
    pixels = np.asarray(image.convert("RGB"))
    blue = int((pixels == np.array([30, 80, 220], dtype=np.uint8)).all(axis=-1).sum())
    assert blue > 50  # the running-mean line is drawn

    empty = write_loss_curve([], tmp_path / "empty.png")  # no steps yet: an empty frame, no error
    assert Image.open(empty).size == (640, 360)
