"""One sampler implementation for two array libraries: torch and numpy give the same numbers from the same
inputs (float64: identical), dtypes are kept, bad calls are refused, and the package imports without torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from genrt.errors import ConfigError, InputError
from genrt.sampling import DEEPFLOYD_IF_SCHEDULE, SAMPLERS, SD1_SCHEDULE, SD2_V_SCHEDULE, make_sampler

SHAPE = (2, 3, 4, 4)
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


def fake_model(x: np.ndarray, t) -> np.ndarray:
    """A fixed smooth function of (x, t) standing in for a network: (B, C, H, W) -> (B, C, H, W)."""
    return 0.6 * np.tanh(x) * (1 + 0.3 * np.cos(float(t) / 150.0)) + 0.05 * x


def run_both(name, config, num_steps, dtype=np.float64, start=0, learned_variance=False, **options):
    """The same sampler on numpy arrays and on torch tensors, fed the same model outputs and noise
    (computed from the numpy trajectory); returns the per-step (numpy, torch) states."""
    on_numpy, on_torch = make_sampler(name, config, **options), make_sampler(name, config, **options)
    timesteps = on_numpy.set_timesteps(num_steps)
    assert np.array_equal(timesteps, on_torch.set_timesteps(num_steps))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(dtype)
    if start:  # img2img: noise a clean sample to a later timestep and start there
        noise = rng.standard_normal(SHAPE).astype(dtype)
        x_torch = on_torch.add_noise(torch.from_numpy(x), torch.from_numpy(noise), timesteps[start])
        x = on_numpy.add_noise(x, noise, timesteps[start])
    else:
        x = x * dtype(on_numpy.init_noise_sigma)
        x_torch = torch.from_numpy(x.copy())
    states = []
    for t in timesteps[start:]:
        model_input = on_numpy.scale_model_input(x, t)
        assert np.abs(model_input - on_torch.scale_model_input(x_torch, t).numpy()).max() <= 1e-14 * np.abs(x).max()
        output = fake_model(model_input, t).astype(dtype)
        if learned_variance:  # second half: the variance interpolation value in [-1, 1]
            output = np.concatenate([output, np.tanh(output)], axis=1)
        noise = rng.standard_normal(SHAPE).astype(dtype)
        x = on_numpy.step(output, t, x, noise)
        x_torch = on_torch.step(torch.from_numpy(output), t, x_torch, torch.from_numpy(noise))
        assert isinstance(x, np.ndarray) and isinstance(x_torch, torch.Tensor)
        states.append((x, x_torch.numpy()))
    return states


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "pndm"])
def test_numpy_equals_torch_float64(name, prediction):
    for spacing in ("leading", "linspace"):
        config = SD1_SCHEDULE.replace(prediction_type=prediction, timestep_spacing=spacing, clip_sample=True)
        for x, x_torch in run_both(name, config, 7):
            assert x.dtype == np.float64 and np.array_equal(x, x_torch)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_numpy_equals_torch_float64_pndm_and_ddpm_learned_range(prediction):
    for x, x_torch in run_both("pndm", SD2_V_SCHEDULE.replace(prediction_type=prediction), 9):
        assert np.array_equal(x, x_torch)
    config = DEEPFLOYD_IF_SCHEDULE.replace(prediction_type=prediction)
    options = {"dynamic_threshold_percentile": 0.9, "dynamic_threshold_max": 1.5}
    for x, x_torch in run_both("ddpm", config, 6, learned_variance=True, **options):  # exp: numpy's vs torch's
        assert np.abs(x - x_torch).max() < 1e-14 * np.abs(x).max()
    for x, x_torch in run_both("ddim", config.replace(variance_type="fixed_small"), 6, eta=0.8, **options):
        assert np.array_equal(x, x_torch)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_float32_is_kept_and_img2img_start_agrees(name):
    config = SD1_SCHEDULE.replace(timestep_spacing="trailing", steps_offset=0)
    for x, x_torch in run_both(name, config, 8, dtype=np.float32):
        assert x.dtype == np.float32 and x_torch.dtype == np.float32
        np.testing.assert_allclose(x, x_torch, rtol=1e-5, atol=1e-5)
    for x, x_torch in run_both(name, config, 8, start=3):
        assert np.array_equal(x, x_torch)


def test_skipping_ahead_drops_the_multistep_history():
    """Starting part-way (img2img) or skipping ahead is the first step of a fresh sampler; going back is refused."""
    for name in ("dpmpp_2m", "pndm", "lms"):
        used, fresh = make_sampler(name, SD1_SCHEDULE), make_sampler(name, SD1_SCHEDULE)
        timesteps = used.set_timesteps(8)
        fresh.set_timesteps(8)
        x = np.random.default_rng(3).standard_normal(SHAPE)
        for t in timesteps[:2]:
            x = used.step(fake_model(x, t), t, x)
        t = timesteps[5]  # a fresh sampler started there (LMS's order counts from the schedule's start)
        assert np.array_equal(used.step(fake_model(x, t), t, x), fresh.step(fake_model(x, t), t, x)), name
        with pytest.raises(InputError, match=f"current timestep is {timesteps[6]}"):
            used.step(x, timesteps[4], x)


def test_step_validation():
    sampler = make_sampler("ddim", SD1_SCHEDULE, eta=1.0)
    timesteps = sampler.set_timesteps(4)
    x = np.zeros(SHAPE)
    with pytest.raises(InputError, match="model_output has shape"):
        sampler.step(np.zeros((1, 3, 4, 4)), timesteps[0], x)
    with pytest.raises(InputError, match="noise None"):
        sampler.step(x, timesteps[0], x)
    with pytest.raises(InputError, match="eta is -1"):
        make_sampler("ddim", SD1_SCHEDULE, eta=-1)
    with pytest.raises(ConfigError, match="unknown sampler 'plms'"):
        make_sampler("plms", SD1_SCHEDULE)
    with pytest.raises(ConfigError, match="does not take option"):
        make_sampler("euler", SD1_SCHEDULE, eta=0.5)
    with pytest.raises(ConfigError, match="prediction_type='sample'"):
        make_sampler("pndm", SD1_SCHEDULE.replace(prediction_type="sample"))
    with pytest.raises(ConfigError, match="use_karras_sigmas"):
        make_sampler("euler_ancestral", SD1_SCHEDULE.replace(use_karras_sigmas=True))
    euler = make_sampler("euler", SD1_SCHEDULE.replace(timestep_spacing="linspace"))
    with pytest.raises(InputError, match="before set_timesteps"):
        euler.init_noise_sigma
    timesteps = euler.set_timesteps(7)
    assert timesteps.dtype == np.float32 and timesteps[1] != int(timesteps[1])  # fractional, as diffusers
    with pytest.raises(InputError, match="current timestep is"):
        euler.scale_model_input(x, int(timesteps[1]))


def test_sampling_imports_and_runs_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import genrt.sampling as s\n"
        "import numpy as np\n"
        "for name in s.SAMPLERS:\n"
        "    d = s.make_sampler(name, {'beta_schedule': 'scaled_linear', 'beta_start': 0.00085, 'beta_end': 0.012})\n"
        "    x = np.ones((1, 4, 2, 2), np.float32)\n"
        "    for t in d.set_timesteps(3):\n"
        "        x = d.step(d.scale_model_input(x, t) * 0.1, t, x, x if d.needs_noise else None)\n"
        "    assert x.dtype == np.float32, name\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
