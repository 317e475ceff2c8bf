"""Samplers on a toy problem with a closed-form model: data x_0 ~ N(MU, S^2) per element, so

    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) MU) / (abar S^2 + 1 - abar)

is the exact epsilon-model (converted to v / x_0 for the other parameterisations). The probability-flow
ODE of a Gaussian keeps the z-score (x_t - sqrt(abar) MU) / sqrt(abar S^2 + 1 - abar) constant, so the
exact deterministic sample from x_T is known; "linspace" spacing makes every step count start at
t = 999 and end with the x_0 prediction at t = 0, so all step counts aim at the same answer.
"""

import pytest
import torch

from genrt.sdk.diffusion import NoiseSchedule, ScheduleConfig, make_sampler

MU, S = 1.5, 0.5
STEP_COUNTS = [10, 20, 40, 80, 160, 320]


def toy_config(prediction: str) -> ScheduleConfig:
    return ScheduleConfig(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type=prediction, timestep_spacing="linspace",
    )


def exact_model(schedule: NoiseSchedule):
    """The Bayes-optimal network output for the Gaussian data: (B, ...) -> (B, ...)."""

    def model(x_t: torch.Tensor, t) -> torch.Tensor:
        alpha_bar = float(schedule.alphas_cumprod[int(t)])
        eps = (1 - alpha_bar) ** 0.5 * (x_t - alpha_bar**0.5 * MU) / (alpha_bar * S**2 + 1 - alpha_bar)
        x0 = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5
        v = alpha_bar**0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
        return {"epsilon": eps, "v_prediction": v, "sample": x0}[schedule.config.prediction_type]

    return model


def exact_sample(schedule: NoiseSchedule, x_T: torch.Tensor) -> torch.Tensor:
    """The ODE solution from t = 999 to t = 0, then E[x_0 | x_{t=0}]."""
    abar_T, abar_0 = (float(schedule.alphas_cumprod[i]) for i in (-1, 0))
    z = (x_T - abar_T**0.5 * MU) / (abar_T * S**2 + 1 - abar_T) ** 0.5
    x_at_0 = abar_0**0.5 * MU + (abar_0 * S**2 + 1 - abar_0) ** 0.5 * z
    return MU + abar_0**0.5 * S**2 * (x_at_0 - abar_0**0.5 * MU) / (abar_0 * S**2 + 1 - abar_0)


def run(name, config, num_steps, x_T, generator=None, **options):
    sampler = make_sampler(name, config, **options)
    model = exact_model(sampler.schedule)
    timesteps = sampler.set_timesteps(num_steps)
    x = x_T * sampler.init_noise_sigma  # the samplers' own state at t = 999 for x_t = x_T
    for t in timesteps:
        output = model(sampler.scale_model_input(x, t), t)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if generator is not None else None
        x = sampler.step(output, t, x, noise=noise)
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_deterministic_samplers_converge_to_the_ode_solution(prediction):
    config = toy_config(prediction)
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1)
    exact = exact_sample(NoiseSchedule(config), x_T)
    errors = {}
    for name in ("ddim", "dpmpp_2m", "euler"):
        errors[name] = [float((run(name, config, n, x_T) - exact).abs().max()) for n in STEP_COUNTS]
        assert all(b < a for a, b in zip(errors[name][1:], errors[name][2:])), (name, errors[name])
    # first order: DDIM halves its error per doubling of the steps; Euler on the Karras ODE is DDIM
    assert errors["ddim"][-1] < 0.015 and errors["ddim"][-2] / errors["ddim"][-1] > 1.8
    assert errors["euler"] == pytest.approx(errors["ddim"], rel=1e-6)
    # second order (multistep): DPM-Solver++(2M) is closer, and gains more per doubling
    assert errors["dpmpp_2m"][-1] < 0.35 * errors["ddim"][-1]
    assert errors["dpmpp_2m"][-2] / errors["dpmpp_2m"][-1] > 2.8
    # hence the three converge to the same sample
    gap = [float((run("dpmpp_2m", config, n, x_T) - run("ddim", config, n, x_T)).abs().max()) for n in (10, 320)]
    assert gap[1] < 0.02 and gap[1] < 0.1 * gap[0], gap


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ancestral_samplers_agree_and_sample_the_data_distribution(prediction):
    config = toy_config(prediction)
    x_T = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    final = {}
    for steps in (25, 100):
        samples = {
            name: run(name, config, steps, x_T, torch.Generator().manual_seed(1), **options)
            for name, options in (("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler_ancestral", {}))
        }
        # DDPM's posterior, DDIM with eta = 1 and Euler ancestral are the same update (same noise)
        assert float((samples["ddim"] - samples["ddpm"]).abs().max()) < 1e-9
        assert float((samples["euler_ancestral"] - samples["ddpm"]).abs().max()) < 1e-9
        final[steps] = samples["ddpm"]
    # N(MU, S^2) up to sampling error (std error of the mean ~0.004) and a discretisation bias that shrinks
    assert abs(float(final[100].mean()) - MU) < 0.015
    assert abs(float(final[100].std()) - S) < 0.04 < abs(float(final[25].std()) - S)
