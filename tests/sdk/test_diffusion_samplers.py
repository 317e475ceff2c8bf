"""Samplers step by step against the diffusers schedulers (test-only references), with a fixed fake model.

Diffusers options are chosen to match our conventions: no sample clipping, ``set_alpha_to_one`` for
DDIM, ``use_clipped_model_output`` (eps re-derived from a thresholded x_0), DPM-Solver++ midpoint
with a lower-order, zero-sigma final step. Intentional deviation: diffusers' Euler reports
``init_noise_sigma = sigma_max`` for "trailing"/"linspace" spacing; ours is always sqrt(sigma_max^2 + 1),
the standard deviation of x at the first step (the loop below seeds both with the same x).
"""

import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.sdk.diffusion import (
    DEEPFLOYD_IF_SCHEDULE,
    SD1_SCHEDULE,
    ScheduleConfig,
    make_sampler,
)
from tests.conftest import relative_error

diffusers = pytest.importorskip("diffusers")

PREDICTIONS = ["epsilon", "v_prediction", "sample"]
SHAPE = (2, 3, 4, 4)


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed smooth function of (x, t) standing in for a network: (B, C, H, W) -> (B, C, H, W)."""
    t = float(t)
    return 0.6 * torch.tanh(x) * (1 + 0.3 * torch.cos(torch.tensor(t / 150.0, dtype=x.dtype))) + 0.05 * x


def diffusers_reference(name: str, config: ScheduleConfig, **options):
    common = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule={"cosine": "squaredcos_cap_v2"}.get(config.beta_schedule, config.beta_schedule),
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type=config.prediction_type,
        timestep_spacing=config.timestep_spacing,
        steps_offset=config.steps_offset,
    )
    if name == "ddpm":
        return diffusers.DDPMScheduler(variance_type=config.variance_type, clip_sample=False, **common, **options)
    if name == "ddim":
        return diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common, **options)
    if name == "dpmpp_2m":
        return diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
            final_sigmas_type="zero", **common, **options,
        )
    if name == "euler":
        return diffusers.EulerDiscreteScheduler(**common, **options)
    return diffusers.EulerAncestralDiscreteScheduler(**common, **options)


def run_both(name, config, num_steps, ours_options=None, reference_options=None, step_options=None, channels_out=None):
    """Run our sampler and the diffusers one side by side from the same x_T and noise; returns the
    per-step (ours, reference) samples and both timestep lists."""
    ours = make_sampler(name, config, **(ours_options or {}))
    reference = diffusers_reference(name, config, **(reference_options or {}))
    timesteps = ours.set_timesteps(num_steps)
    reference.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=generator, dtype=torch.float64) * ours.init_noise_sigma
    x_ref = x.clone()
    pairs = []
    for index, (t, t_ref) in enumerate(zip(timesteps, reference.timesteps)):
        output = fake_model(ours.scale_model_input(x, t), t)
        output_ref = fake_model(reference.scale_model_input(x_ref, t_ref), t_ref)
        if channels_out is not None:  # learned variance: the extra channels are a value in [-1, 1]
            output = torch.cat([output, torch.tanh(output)], dim=1)
            output_ref = torch.cat([output_ref, torch.tanh(output_ref)], dim=1)
        seed = 1000 + index
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = ours.step(output, t, x, noise=noise)
        ref_kwargs = dict(step_options or {})
        if name == "ddim":
            ref_kwargs["variance_noise"] = noise
        else:
            ref_kwargs["generator"] = torch.Generator().manual_seed(seed)  # draws the same `noise`
        x_ref = reference.step(output_ref, t_ref, x_ref, **ref_kwargs).prev_sample
        pairs.append((x, x_ref))
    return pairs, timesteps.tolist(), [float(t) for t in reference.timesteps]


def assert_agree(pairs, tolerance=1e-5):
    for step, (x, x_ref) in enumerate(pairs):
        assert x.shape == SHAPE and x.dtype == torch.float64
        error = relative_error(x, x_ref)
        assert error < tolerance, f"step {step}: relative error {error:.2e}"


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral"])
def test_samplers_match_diffusers(name, prediction):
    if (name, prediction) == ("euler_ancestral", "sample"):
        pytest.skip("diffusers' EulerAncestralDiscreteScheduler does not implement x_0 prediction")
    spacing = "trailing" if name == "dpmpp_2m" else "leading"  # diffusers' DPM "leading" spaces n + 1 points
    config = SD1_SCHEDULE.replace(prediction_type=prediction, timestep_spacing=spacing,
                                  steps_offset=1 if spacing == "leading" else 0)
    pairs, timesteps, reference_timesteps = run_both(name, config, 6)
    assert timesteps == reference_timesteps
    assert_agree(pairs)


def test_ddim_eta_uses_callers_noise_and_matches_diffusers():
    pairs, _, _ = run_both("ddim", SD1_SCHEDULE, 5, ours_options={"eta": 0.7}, step_options={"eta": 0.7})
    assert_agree(pairs)
    deterministic, _, _ = run_both("ddim", SD1_SCHEDULE, 5)
    assert relative_error(pairs[-1][0], deterministic[-1][0]) > 1e-2  # the noise really entered


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_learned_range_matches_diffusers(prediction):
    config = DEEPFLOYD_IF_SCHEDULE.replace(prediction_type=prediction)
    pairs, _, _ = run_both("ddpm", config, 7, channels_out=2 * SHAPE[1])
    assert_agree(pairs, tolerance=3e-5)  # diffusers keeps the cosine tail (abar ~ 1e-5) in float32


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_dynamic_thresholding_matches_diffusers(name):
    config = ScheduleConfig(beta_schedule="cosine", prediction_type="sample")  # x_0 outputs beyond [-1, 1]
    options = {"dynamic_threshold_percentile": 0.9, "dynamic_threshold_max": 1.5}
    reference_options = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}
    step_options = {"use_clipped_model_output": True} if name == "ddim" else None
    pairs, _, _ = run_both(name, config, 5, options, reference_options, step_options)
    assert_agree(pairs)


def test_dpm_solver_skipping_ahead_drops_the_history():
    # starting part-way (img2img) or skipping ahead is a first-order step, as on a fresh sampler
    config = SD1_SCHEDULE.replace(timestep_spacing="trailing", steps_offset=0)
    used, fresh = make_sampler("dpmpp_2m", config), make_sampler("dpmpp_2m", config)
    timesteps = used.set_timesteps(8).tolist()
    fresh.set_timesteps(8)
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for t in timesteps[:2]:
        x = used.step(fake_model(x, t), t, x)
    t = timesteps[4]
    assert torch.equal(used.step(fake_model(x, t), t, x), fresh.step(fake_model(x, t), t, x))
    with pytest.raises(InputError, match=f"next timestep is {timesteps[5]}"):
        used.step(x, timesteps[3], x)  # cannot go back


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral"])
def test_add_noise_matches_diffusers(name):
    config = SD1_SCHEDULE.replace(timestep_spacing="trailing", steps_offset=0)  # same timesteps for all five
    sampler, reference = make_sampler(name, config), diffusers_reference(name, config)
    timesteps = sampler.set_timesteps(10)
    reference.set_timesteps(10)
    x0 = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = timesteps[4]
    assert int(reference.timesteps[4]) == t
    expected = reference.add_noise(x0, noise, reference.timesteps[4:5])
    assert relative_error(sampler.add_noise(x0, noise, t), expected) < 1e-6


def test_step_validation():
    sampler = make_sampler("ddim", SD1_SCHEDULE, eta=1.0)
    timesteps = sampler.set_timesteps(4)
    x = torch.zeros(SHAPE)
    with pytest.raises(InputError, match="model_output has shape"):
        sampler.step(torch.zeros(1, 3, 4, 4), timesteps[0], x)
    with pytest.raises(InputError, match="noise None"):
        sampler.step(x, timesteps[0], x)
    with pytest.raises(InputError, match="eta is -1"):
        make_sampler("ddim", SD1_SCHEDULE, eta=-1)
    with pytest.raises(ConfigError, match="unknown sampler 'plms'"):
        make_sampler("plms", SD1_SCHEDULE)
    with pytest.raises(ConfigError, match="does not take option"):
        make_sampler("euler", SD1_SCHEDULE, eta=0.5)
    euler = make_sampler("euler", SD1_SCHEDULE)
    with pytest.raises(InputError, match="before set_timesteps"):
        euler.init_noise_sigma
