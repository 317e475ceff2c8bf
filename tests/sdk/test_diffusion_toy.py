"""Samplers on a toy problem with a closed-form model: data x_0 ~ N(MU, S^2) per element, so

    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) MU) / (abar S^2 + 1 - abar)

is the exact epsilon-model (converted to v / x_0 for the other parameterisations; abar at a fractional
timestep of the sigma samplers is 1 / (1 + sigma_t^2), sigma interpolated as they do). The probability-flow
ODE of a Gaussian keeps the z-score (x_t - sqrt(abar) MU) / sqrt(abar S^2 + 1 - abar) constant, so the
exact deterministic sample from x_T at the first timestep to the x_0 prediction at the last is known.
Euler and DPM-Solver++ run diffusers' "linspace" spacing (999 -> 0 for every step count), DDIM its
"leading" one (diffusers' DDIM steps t -> t - T // n, which only lands on the next timestep there).
"""

import numpy as np
import pytest
import torch

from genrt.sampling import NoiseSchedule, ScheduleConfig, make_sampler

MU, S = 1.5, 0.5
# DPM-Solver++ reaches its second-order regime from ~80 steps on diffusers' n + 1 point linspace
STEP_COUNTS = {"euler": [10, 20, 40, 80, 160, 320], "dpmpp_2m": [40, 80, 160, 320, 640],
               "ddim": [10, 20, 40, 125, 250, 500]}


def toy_config(prediction: str, spacing: str = "linspace") -> ScheduleConfig:
    return ScheduleConfig(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type=prediction, timestep_spacing=spacing,
    )


def alpha_bar_at(schedule: NoiseSchedule, t) -> float:
    """abar at a (possibly fractional) timestep: 1 / (1 + sigma^2), sigma interpolated over the table."""
    table = schedule.sigma_table()
    return 1.0 / (1.0 + float(np.interp(float(t), np.arange(len(table)), table)) ** 2)


def exact_model(schedule: NoiseSchedule):
    """The Bayes-optimal network output for the Gaussian data: (B, ...) -> (B, ...)."""

    def model(x_t: torch.Tensor, t) -> torch.Tensor:
        alpha_bar = alpha_bar_at(schedule, t)
        eps = (1 - alpha_bar) ** 0.5 * (x_t - alpha_bar**0.5 * MU) / (alpha_bar * S**2 + 1 - alpha_bar)
        x0 = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5
        v = alpha_bar**0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
        return {"epsilon": eps, "v_prediction": v, "sample": x0}[schedule.config.prediction_type]

    return model


def exact_sample(schedule: NoiseSchedule, x_T: torch.Tensor, first, last) -> torch.Tensor:
    """The ODE solution from timestep ``first`` to ``last``, then E[x_0 | x_last]."""
    abar_T, abar_0 = alpha_bar_at(schedule, first), alpha_bar_at(schedule, last)
    z = (x_T - abar_T**0.5 * MU) / (abar_T * S**2 + 1 - abar_T) ** 0.5
    x_at_0 = abar_0**0.5 * MU + (abar_0 * S**2 + 1 - abar_0) ** 0.5 * z
    return MU + abar_0**0.5 * S**2 * (x_at_0 - abar_0**0.5 * MU) / (abar_0 * S**2 + 1 - abar_0)


def run(name, config, num_steps, x_T, generator=None, **options):
    """(x_0, exact x_0) from x_t = x_T at the first timestep (for a stochastic run, exact is None)."""
    sampler = make_sampler(name, config, **options)
    model = exact_model(sampler.schedule)
    timesteps = sampler.set_timesteps(num_steps)
    x = x_T / sampler.scale_model_input(torch.ones(()), timesteps[0])  # the sampler's state for x_t = x_T
    for t in timesteps:
        output = model(sampler.scale_model_input(x, t), t)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if generator is not None else None
        x = sampler.step(output, t, x, noise=noise)
    return x, exact_sample(sampler.schedule, x_T, timesteps[0], timesteps[-1])


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_deterministic_samplers_converge_to_the_ode_solution(prediction):
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1)
    errors = {}
    for name, counts in STEP_COUNTS.items():
        config = toy_config(prediction, "leading" if name == "ddim" else "linspace")
        errors[name] = [float((lambda r: (r[0] - r[1]).abs().max())(run(name, config, n, x_T))) for n in counts]
        assert all(b < a for a, b in zip(errors[name][1:], errors[name][2:])), (name, errors[name])
    # first order: DDIM and Euler halve their error per doubling of the steps
    for name in ("ddim", "euler"):
        assert errors[name][-1] < 0.015 and errors[name][-2] / errors[name][-1] > 1.8, (name, errors[name])
    # second order (multistep): DPM-Solver++(2M) is closer, and gains more per doubling
    assert errors["dpmpp_2m"][-2] < 0.35 * errors["euler"][-1]  # both at 320 steps
    assert errors["dpmpp_2m"][-2] / errors["dpmpp_2m"][-1] > 2.8


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ancestral_samplers_agree_and_sample_the_data_distribution(prediction):
    config = toy_config(prediction, "leading")  # the same integer timesteps for all three
    x_T = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    final = {}
    for steps in (25, 100):
        samples = {
            name: run(name, config, steps, x_T, torch.Generator().manual_seed(1), **options)[0]
            for name, options in (("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler_ancestral", {}))
        }
        # DDPM's posterior, DDIM with eta = 1 and Euler ancestral are the same update (same noise; float64
        # rounding of three algebraic forms over 100 steps)
        assert float((samples["ddim"] - samples["ddpm"]).abs().max()) < 1e-8
        assert float((samples["euler_ancestral"] - samples["ddpm"]).abs().max()) < 1e-8
        final[steps] = samples["ddpm"]
    # N(MU, S^2) up to sampling error (std error of the mean ~0.004) and a discretisation bias that shrinks
    assert abs(float(final[100].mean()) - MU) < 0.015
    assert abs(float(final[100].std()) - S) < 0.04 < abs(float(final[25].std()) - S)
