"""Noise schedules, timestep spacing and prediction conversions against diffusers (test-only reference);
the schedule on torch tensors and on numpy arrays."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.sampling import DEEPFLOYD_IF_SCHEDULE, SD1_SCHEDULE, SD2_V_SCHEDULE, NoiseSchedule, ScheduleConfig
from genrt.sampling.schedule import inference_timesteps, max_inference_steps
from tests.conftest import relative_error

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def reference_scheduler(config: ScheduleConfig):
    return diffusers.DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=DIFFUSERS_BETA_SCHEDULE[config.beta_schedule],
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type=config.prediction_type,
        timestep_spacing=config.timestep_spacing,
        steps_offset=config.steps_offset,
    )


@pytest.mark.parametrize("config", [ScheduleConfig(), SD1_SCHEDULE, DEEPFLOYD_IF_SCHEDULE], ids=lambda c: c.beta_schedule)
def test_betas_and_alphas_cumprod_match_diffusers(config):
    ours, ref = NoiseSchedule(config), reference_scheduler(config)
    assert ours.betas.shape == (1000,) and ours.betas.dtype == np.float64
    # diffusers builds the schedule in float32: agreement to float32 rounding
    assert relative_error(ours.betas, ref.betas) < 1e-6
    assert relative_error(ours.alphas_cumprod, ref.alphas_cumprod) < 1e-5
    assert relative_error(ours.alphas_cumprod[-1:], ref.alphas_cumprod[-1:]) < 1e-3  # tiny tail, relative


def test_cosine_schedule_follows_nichol_dhariwal_formula():
    betas = NoiseSchedule(DEEPFLOYD_IF_SCHEDULE).betas
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert betas[0] == pytest.approx(1 - f(1 / 1000) / f(0), rel=1e-12)
    assert betas[500] == pytest.approx(1 - f(501 / 1000) / f(500 / 1000), rel=1e-12)
    assert betas[-1].item() == 0.999  # capped


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [1, 3, 7, 50, 1000])
def test_timesteps_match_diffusers(spacing, num_steps):
    offset = 1 if spacing == "leading" and num_steps < 1000 else 0
    config = SD1_SCHEDULE.replace(timestep_spacing=spacing, steps_offset=offset)
    ref = reference_scheduler(config)
    ref.set_timesteps(num_steps)
    assert inference_timesteps(config, num_steps).tolist() == ref.timesteps.tolist()


def test_timesteps_refuse_bad_counts():
    with pytest.raises(InputError, match="num_steps"):
        inference_timesteps(SD1_SCHEDULE, 0)
    with pytest.raises(InputError, match="num_steps"):
        inference_timesteps(SD1_SCHEDULE, True)
    # leading + offset 1: 1000 steps would start at t = 1000, so the range named is the one accepted
    with pytest.raises(InputError, match="num_steps is 1000 .*between 1 and 999"):
        inference_timesteps(SD1_SCHEDULE, 1000)
    assert inference_timesteps(SD1_SCHEDULE, 999).max() == 999
    assert max_inference_steps(SD1_SCHEDULE.replace(steps_offset=0)) == 1000
    assert max_inference_steps(SD1_SCHEDULE.replace(timestep_spacing="trailing")) == 1000


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_add_noise_targets_and_conversions(prediction, backend):
    config = SD2_V_SCHEDULE.replace(prediction_type=prediction)
    schedule, ref = NoiseSchedule(config), reference_scheduler(config)
    torch.manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    t = torch.tensor([0, 417, 999])
    reference_x_t, reference_v = ref.add_noise(x0, noise, t), ref.get_velocity(x0, noise, t)
    if backend == "numpy":
        x0, noise, t = x0.numpy(), noise.numpy(), t.numpy()
    x_t = schedule.add_noise(x0, noise, t)
    assert type(x_t) is type(x0) and x_t.dtype == x0.dtype and x_t.shape == (3, 4, 5, 5)
    assert relative_error(x_t, reference_x_t) < 1e-6
    assert relative_error(schedule.v_target(x0, noise, t), reference_v) < 1e-6
    # the training target of the configured parameterisation converts back to x_0 and eps exactly
    target = schedule.training_target(x0, noise, t)
    expected_target = {"epsilon": noise, "sample": x0}.get(prediction, schedule.v_target(x0, noise, t))
    assert (target == expected_target).all()
    assert relative_error(schedule.predict_x0(target, x_t, t)[1:], x0[1:]) < 1e-9
    assert relative_error(schedule.predict_epsilon(target, x_t, t)[:2], noise[:2]) < 1e-9


def test_alpha_bar_refuses_out_of_range_and_float_timesteps():
    schedule = NoiseSchedule(SD1_SCHEDULE)
    for x, array in ((torch.zeros(2, 4, 8, 8), torch.tensor), (np.zeros((2, 4, 8, 8)), np.array)):
        with pytest.raises(InputError, match="0..999"):
            schedule.add_noise(x, x, array([3, 1000]))
        with pytest.raises(InputError, match="integer"):
            schedule.add_noise(x, x, array([3.0, 4.0]))
    with pytest.raises(InputError, match="numpy array or a torch tensor"):
        schedule.add_noise([0.0], [0.0], 3)


def test_presets_and_validation():
    stored = dataclasses.asdict(SD1_SCHEDULE)
    assert {k: stored[k] for k in ("beta_schedule", "beta_start", "beta_end", "prediction_type", "steps_offset")} == {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
        "steps_offset": 1}
    assert ScheduleConfig.from_dict(stored) == SD1_SCHEDULE
    betas = dict(stored, trained_betas=[0.01] * 1000)  # JSON lists come back as tuples
    assert ScheduleConfig.from_dict(betas).trained_betas == (0.01,) * 1000
    assert NoiseSchedule(ScheduleConfig.from_dict(betas)).alphas_cumprod[-1] == pytest.approx(0.99**1000, rel=1e-12)
    with pytest.raises(ConfigError, match="unknown field.*thresholding"):
        ScheduleConfig.from_dict({**stored, "thresholding": True})
    with pytest.raises(ConfigError, match="trained_betas has 3 values"):
        ScheduleConfig(trained_betas=(0.1, 0.2, 0.3))
    assert SD2_V_SCHEDULE.prediction_type == "v_prediction" and SD2_V_SCHEDULE.beta_end == 0.012
    assert (DEEPFLOYD_IF_SCHEDULE.beta_schedule, DEEPFLOYD_IF_SCHEDULE.variance_type) == ("cosine", "learned_range")
    with pytest.raises(ConfigError, match="prediction_type is 'eps'"):
        ScheduleConfig(prediction_type="eps")
    with pytest.raises(ConfigError, match="betas"):
        ScheduleConfig(beta_start=0.02, beta_end=0.01)
    with pytest.raises(ConfigError, match="final_sigmas_type is 'last'"):
        ScheduleConfig(final_sigmas_type="last")


def test_zero_terminal_snr_rescale():
    """Lin et al. 2023: abar_{T-1} = 0 and abar_0 unchanged; diffusers' float32 version agrees."""
    config = SD1_SCHEDULE.replace(rescale_betas_zero_snr=True)
    ours = NoiseSchedule(config)
    reference = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        rescale_betas_zero_snr=True)
    assert ours.alphas_cumprod[-1] == pytest.approx(0.0, abs=1e-20)
    assert ours.alphas_cumprod[0] == pytest.approx(NoiseSchedule(SD1_SCHEDULE).alphas_cumprod[0], rel=1e-12)
    assert relative_error(ours.alphas_cumprod, reference.alphas_cumprod) < 1e-5
    assert ours.sigma_table()[-1] == pytest.approx((1 - 2**-24) ** 0.5 * 2**12, rel=1e-12)  # finite sigma_max
