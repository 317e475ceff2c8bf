"""The recipes' shared pieces: per-step generators and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from genrt.sdk.train.common import Budget, cosine_lr, generator


def test_generator_depends_on_seed_phase_and_step_only():
    draw = [torch.rand(3, generator=generator(0, 1, 5)) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])
    others = [generator(1, 1, 5), generator(0, 2, 5), generator(0, 1, 6)]
    assert all(not torch.equal(torch.rand(3, generator=g), draw[0]) for g in others)


@pytest.mark.parametrize("step, expected", [(0, 0.02), (49, 1.0), (50, 1.0), (525, 0.525), (1000, 0.05)])
def test_cosine_lr_warms_up_then_decays_to_five_percent(step, expected):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    cosine_lr(optimizer, 1.0, step, total=1000, warmup=50)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-9)


def test_budget_shares_what_is_left():
    assert Budget(None, seed=0).left(0.5) is None
    budget = Budget(2.0, seed=0)
    assert 59.0 < budget.left(0.5) <= 60.0 and torch.get_num_threads() == 1
