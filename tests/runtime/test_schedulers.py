"""The numpy schedulers against the torch reference (genrt.sdk.diffusion), step by step, from the same noise."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.runtime import schedulers as np_diffusion
from genrt.sdk import diffusion as torch_diffusion
from tests.conftest import relative_error

SHAPE = (2, 3, 4, 4)
SAMPLERS = ["ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


def fake_model_np(x: np.ndarray, t: int) -> np.ndarray:
    """A fixed smooth function of (x, t) standing in for a network: (B, C, H, W) -> (B, C, H, W)."""
    return 0.6 * np.tanh(x) * (1 + 0.3 * np.cos(t / 150.0)) + 0.05 * x


def run_pair(name, config, num_steps, dtype=np.float64, options=None, learned_variance=False, start=0):
    """Run the torch and the numpy sampler on the same inputs; returns the per-step (numpy, torch) pairs.

    The model is evaluated once in numpy on the numpy trajectory and fed to both, so each step compares
    the two updates, not an accumulation of model evaluations."""
    torch_config = torch_diffusion.ScheduleConfig(**dataclasses.asdict(config))
    ours = np_diffusion.make_sampler(name, dataclasses.asdict(config), **(options or {}))
    reference = torch_diffusion.make_sampler(name, torch_config, **(options or {}))
    timesteps = ours.set_timesteps(num_steps)
    assert timesteps.dtype == np.int64
    assert timesteps.tolist() == reference.set_timesteps(num_steps).tolist()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(dtype)
    if start:  # img2img: noise a clean sample to the first visited timestep
        noise = rng.standard_normal(SHAPE).astype(dtype)
        x_ref = reference.add_noise(torch.from_numpy(x), torch.from_numpy(noise), int(timesteps[start]))
        x = ours.add_noise(x, noise, int(timesteps[start]))
        assert relative_error(x, x_ref) < 1e-6
    else:
        assert ours.init_noise_sigma == pytest.approx(reference.init_noise_sigma, rel=1e-12)
        x = x * dtype(ours.init_noise_sigma)
        x_ref = torch.from_numpy(x.copy())
    pairs = []
    for t in timesteps[start:]:
        t = int(t)
        model_input = ours.scale_model_input(x, t)
        assert relative_error(model_input, reference.scale_model_input(x_ref, t)) < 1e-6
        output = fake_model_np(model_input, t).astype(dtype)
        if learned_variance:  # second half: the variance interpolation value in [-1, 1]
            output = np.concatenate([output, np.tanh(output)], axis=1)
        noise = rng.standard_normal(SHAPE).astype(dtype)
        x = ours.step(output, t, x, noise=noise)
        x_ref = reference.step(torch.from_numpy(output), t, x_ref, noise=torch.from_numpy(noise))
        pairs.append((x, x_ref))
    return pairs


def assert_close(pairs, dtype, tolerance):
    for step, (x, x_ref) in enumerate(pairs):
        assert isinstance(x, np.ndarray) and x.dtype == dtype and x.shape == SHAPE
        error = relative_error(x, x_ref)
        assert error < tolerance, f"step {step}: relative error {error:.2e}"


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_numpy_matches_torch_float64(name, prediction):
    config = torch_diffusion.SD1_SCHEDULE.replace(prediction_type=prediction)
    assert_close(run_pair(name, config, 7), np.float64, 1e-6)


@pytest.mark.parametrize("name", SAMPLERS)
def test_numpy_keeps_float32(name):
    pairs = run_pair(name, torch_diffusion.SD2_V_SCHEDULE, 5, dtype=np.float32)
    assert_close(pairs, np.float32, 1e-4)


@pytest.mark.parametrize("name", SAMPLERS)
def test_numpy_img2img_start_matches_torch(name):
    config = torch_diffusion.SD1_SCHEDULE.replace(timestep_spacing="trailing", steps_offset=0)
    assert_close(run_pair(name, config, 8, start=3), np.float64, 1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_numpy_ddpm_learned_range_and_thresholding_match_torch(prediction):
    config = torch_diffusion.DEEPFLOYD_IF_SCHEDULE.replace(prediction_type=prediction)
    options = {"dynamic_threshold_percentile": 0.9, "dynamic_threshold_max": 1.5}
    assert_close(run_pair("ddpm", config, 6, options=options, learned_variance=True), np.float64, 1e-6)


@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_numpy_ddim_eta_and_thresholding_match_torch(eta):
    config = torch_diffusion.ScheduleConfig(beta_schedule="cosine", prediction_type="sample")
    options = {"eta": eta, "dynamic_threshold_percentile": 0.95}
    assert_close(run_pair("ddim", config, 6, options=options), np.float64, 1e-6)


def test_schedule_and_conversions_match_torch():
    for config in (torch_diffusion.ScheduleConfig(), torch_diffusion.SD1_SCHEDULE, torch_diffusion.DEEPFLOYD_IF_SCHEDULE):
        ours = np_diffusion.NoiseSchedule(np_diffusion.ScheduleConfig.from_dict(dataclasses.asdict(config)))
        reference = torch_diffusion.NoiseSchedule(config)
        assert ours.betas.dtype == np.float64 and ours.betas.shape == (1000,)
        assert relative_error(ours.betas, reference.betas) < 1e-12
        assert relative_error(ours.alphas_cumprod, reference.alphas_cumprod) < 1e-12
        for spacing in ("leading", "trailing", "linspace"):
            spaced = config.replace(timestep_spacing=spacing)
            assert np_diffusion.NoiseSchedule(np_diffusion.ScheduleConfig(**dataclasses.asdict(spaced))).timesteps(
                13
            ) == torch_diffusion.NoiseSchedule(spaced).timesteps(13)
    rng = np.random.default_rng(1)
    x0, noise, t = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE), np.array([17, 901])
    for prediction in PREDICTIONS:
        config = torch_diffusion.SD2_V_SCHEDULE.replace(prediction_type=prediction)
        ours = np_diffusion.NoiseSchedule(np_diffusion.ScheduleConfig(**dataclasses.asdict(config)))
        reference = torch_diffusion.NoiseSchedule(config)
        x0_t, noise_t, t_t = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)
        x_t = ours.add_noise(x0, noise, t)
        assert relative_error(x_t, reference.add_noise(x0_t, noise_t, t_t)) < 1e-12
        assert relative_error(ours.v_target(x0, noise, t), reference.v_target(x0_t, noise_t, t_t)) < 1e-12
        output = x0 * 0.5 + noise
        output_t = torch.from_numpy(output)
        x_t_t = torch.from_numpy(x_t)
        assert relative_error(ours.predict_x0(output, x_t, t), reference.predict_x0(output_t, x_t_t, t_t)) < 1e-12
        assert relative_error(
            ours.predict_epsilon(output, x_t, t), reference.predict_epsilon(output_t, x_t_t, t_t)
        ) < 1e-12


def test_guidance_matches_torch():
    rng = np.random.default_rng(2)
    x0 = (rng.standard_normal((3, 2, 8, 8)) * np.array([0.3, 1.5, 4.0])[:, None, None, None]).astype(np.float32)
    for percentile, max_value in ((0.995, None), (0.9, 1.5), (1.0, None)):
        ours = np_diffusion.dynamic_threshold(x0, percentile, max_value)
        reference = torch_diffusion.dynamic_threshold(torch.from_numpy(x0), percentile, max_value)
        assert ours.dtype == np.float32 and relative_error(ours, reference) < 1e-6
    uncond, cond = x0[:1], x0[1:2]
    guided = np_diffusion.classifier_free_guidance(uncond, cond, 7.5)
    assert guided.dtype == np.float32
    assert relative_error(guided, uncond + 7.5 * (cond - uncond)) < 1e-7


def test_config_from_dict_and_errors():
    stored = dataclasses.asdict(torch_diffusion.SD2_V_SCHEDULE)
    config = np_diffusion.ScheduleConfig.from_dict(stored)
    assert dataclasses.asdict(config) == stored
    with pytest.raises(ConfigError, match="unknown field.*clip_sample"):
        np_diffusion.ScheduleConfig.from_dict({**stored, "clip_sample": False})
    with pytest.raises(ConfigError, match="beta_schedule is 'squaredcos_cap_v2'"):
        np_diffusion.make_sampler("ddim", {**stored, "beta_schedule": "squaredcos_cap_v2"})
    with pytest.raises(ConfigError, match="unknown sampler 'lms'"):
        np_diffusion.make_sampler("lms", config)
    sampler = np_diffusion.make_sampler("euler", config)
    timesteps = sampler.set_timesteps(4)
    with pytest.raises(InputError, match="current timestep is"):
        sampler.scale_model_input(np.zeros(SHAPE), int(timesteps[0]) + 1)
    with pytest.raises(InputError, match="num_steps"):
        sampler.set_timesteps(0)


def test_schedulers_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import genrt.runtime.schedulers as s\n"
        "import numpy as np\n"
        "d = s.make_sampler('dpmpp_2m', {'beta_schedule': 'scaled_linear', 'beta_start': 0.00085, 'beta_end': 0.012})\n"
        "t = d.set_timesteps(3); x = np.ones((1, 4, 2, 2), np.float32)\n"
        "for step in t: x = d.step(x * 0.1, int(step), x)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(x.dtype)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "float32"
