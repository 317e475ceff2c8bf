"""genrt.sampling against diffusers' schedulers made as a user's pipeline makes them:
``SchedulerClass.from_config(folder scheduler_config.json)``, for the real SD 1.5 / 2.1 / 2.1-base configs
(none has timestep_spacing), a trailing and a linspace variant, every sampler, 1, 2, 20 and 50 steps.

diffusers computes its schedule in float32 (its betas come from torch.linspace), genrt in float64; the
"same schedule" checks hand diffusers genrt's float64 alphas_cumprod, which isolates the timestep, sigma and
update logic: timesteps and float32 sigmas then match bit for bit, and each step within 1e-6 (float32 only
where diffusers upcasts the sample itself: Euler, Euler ancestral, DPM-Solver++). Stock diffusers is within
float32 rounding of its own schedule.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("scipy")  # diffusers' LMSDiscreteScheduler integrates with scipy

from genrt.errors import ConfigError  # noqa: E402
from genrt.sampling import DIFFUSERS_CLASSES, SchedulerConfig, make_sampler  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures"
REAL = {name: json.loads((FIXTURES / name / "scheduler" / "scheduler_config.json").read_text())
        for name in ("sd15", "sd21", "sd21base")}
# DeepFloyd IF-I-XL-v1.0 scheduler/scheduler_config.json (as tests/diffusers_parity/if_folders.py)
IF_SCHEDULER = json.loads((FIXTURES / "schedulers" / "deepfloyd_if.json").read_text())
CONFIGS = {**REAL, "sd15_trailing": dict(REAL["sd15"], timestep_spacing="trailing"),
           "sd21_linspace": dict(REAL["sd21"], timestep_spacing="linspace")}
CLASSES = {name: class_name for class_name, name in DIFFUSERS_CLASSES.items()}
STEPS = [1, 2, 20, 50]
SHAPE = (2, 4, 8, 8)
# diffusers' Euler / Euler ancestral / DPM-Solver++ step a float32 copy of the sample
FLOAT32_STEPS = ("euler", "euler_ancestral", "dpmpp_2m")

logging.getLogger("diffusers").setLevel(logging.ERROR)
# diffusers' np.array(torch tensor) under numpy 2 warns about the copy keyword
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def relative(ours: np.ndarray, reference) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - reference).max() / np.abs(reference).max())


def pair(config: dict, sampler: str, same_schedule: bool, **overrides):
    """(genrt sampler, diffusers scheduler) for ``config`` read by ``sampler``'s class; ``same_schedule``:
    diffusers gets genrt's float64 alphas_cumprod (set_timesteps then computes its sigmas from them)."""
    resolved = SchedulerConfig.from_dict(dict(config, **overrides)).resolve(sampler)
    ours = make_sampler(resolved.sampler, resolved.schedule, **resolved.options)
    reference = getattr(diffusers, CLASSES[sampler]).from_config(dict(config, **overrides))
    if same_schedule:
        alphas_cumprod = ours.schedule.alphas_cumprod
        reference.alphas_cumprod = torch.from_numpy(alphas_cumprod.copy())
        if hasattr(reference, "final_alpha_cumprod"):
            final = 1.0 if resolved.schedule.set_alpha_to_one else alphas_cumprod[0]
            reference.final_alpha_cumprod = torch.tensor(final, dtype=torch.float64)
    return ours, reference


def walk(ours, reference, num_steps: int, same_schedule: bool) -> float:
    """Largest per-step relative difference of scale_model_input and step, both started each step from
    diffusers' state, on random model outputs; stochastic steps share the noise (diffusers' generator)."""
    timesteps = ours.set_timesteps(num_steps)
    reference.set_timesteps(num_steps)
    if same_schedule and hasattr(reference, "sigmas"):
        reference.sigmas = torch.tensor(ours.sigmas, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, dtype=torch.float64, generator=generator) * float(reference.init_noise_sigma)
    worst = 0.0
    for i, t in enumerate(reference.timesteps):
        assert float(t) == float(timesteps[i])
        output = torch.randn(SHAPE, dtype=torch.float64, generator=generator)
        worst = max(worst, relative(ours.scale_model_input(x.numpy(), timesteps[i]),
                                    reference.scale_model_input(x, t)))
        seed = 1000 + i
        noise = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        options = {"generator": torch.Generator().manual_seed(seed)} if ours.needs_noise else {}
        stepped = reference.step(output, t, x, **options).prev_sample.double()
        mine = ours.step(output.numpy(), timesteps[i], x.numpy(), noise.numpy() if ours.needs_noise else None)
        worst = max(worst, relative(mine, stepped))
        x = stepped
    return worst


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("sampler", list(CLASSES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_timesteps_and_sigmas_equal_diffusers(config, sampler, steps):
    ours, stock = pair(CONFIGS[config], sampler, same_schedule=False)
    timesteps = ours.set_timesteps(steps)
    stock.set_timesteps(steps)
    assert timesteps.dtype == stock.timesteps.numpy().dtype
    np.testing.assert_array_equal(timesteps, stock.timesteps.numpy())
    if hasattr(stock, "sigmas"):
        # stock: within float32 rounding of diffusers' float32 schedule (worst at sigma_min, 1 - abar_0 ~ 1e-3)
        np.testing.assert_allclose(ours.sigmas, stock.sigmas.numpy(), rtol=2e-5, atol=0)
        ours, same = pair(CONFIGS[config], sampler, same_schedule=True)
        ours.set_timesteps(steps)
        same.set_timesteps(steps)
        np.testing.assert_array_equal(np.array(ours.sigmas, dtype=np.float32), same.sigmas.numpy())
        assert float(ours.init_noise_sigma) == pytest.approx(float(same.init_noise_sigma), rel=1e-7)
    else:
        assert ours.init_noise_sigma == stock.init_noise_sigma == 1.0


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("sampler", list(CLASSES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_steps_match_diffusers(config, sampler, steps):
    ours, reference = pair(CONFIGS[config], sampler, same_schedule=True)
    bound = 1e-6 if sampler in FLOAT32_STEPS else 1e-10
    assert walk(ours, reference, steps, same_schedule=True) < bound
    ours, stock = pair(CONFIGS[config], sampler, same_schedule=False)
    assert walk(ours, stock, steps, same_schedule=False) < 2e-5  # diffusers' float32 schedule


@pytest.mark.parametrize("sampler", ["euler", "lms", "dpmpp_2m"])
def test_karras_sigmas_match_diffusers(sampler):
    ours, reference = pair(REAL["sd15"], sampler, same_schedule=True, use_karras_sigmas=True)
    timesteps = ours.set_timesteps(20)
    reference.set_timesteps(20)
    np.testing.assert_allclose(timesteps, reference.timesteps.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.array(ours.sigmas, dtype=np.float32), reference.sigmas.numpy(), rtol=1e-6)
    assert walk(ours, reference, 20, same_schedule=True) < 1e-6


@pytest.mark.parametrize("sampler, overrides", [
    ("ddim", {"clip_sample": True, "set_alpha_to_one": True, "prediction_type": "sample"}),
    ("ddim", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5,
              "prediction_type": "sample"}),
    ("ddpm", {"beta_schedule": "squaredcos_cap_v2", "variance_type": "fixed_large", "clip_sample": True}),
    ("ddpm", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
    ("euler", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
               "final_sigmas_type": "sigma_min"}),
    ("dpmpp_2m", {"final_sigmas_type": "sigma_min", "lower_order_final": False, "timestep_spacing": "leading"}),
    ("pndm", {"set_alpha_to_one": True, "timestep_spacing": "trailing"}),
    ("lms", {"prediction_type": "sample", "timestep_spacing": "leading"}),
])
def test_config_fields_match_diffusers(sampler, overrides):
    """Fields beyond the real SD configs: clipping, thresholding, cosine betas, variances, zero SNR, final sigmas."""
    for steps in (7, 20):
        ours, reference = pair(REAL["sd15"], sampler, same_schedule=True, **overrides)
        ours.set_timesteps(steps)
        reference.set_timesteps(steps)
        np.testing.assert_array_equal(ours.set_timesteps(steps), reference.timesteps.numpy())
        bound = 1e-6 if sampler in FLOAT32_STEPS else 1e-10
        assert walk(ours, reference, steps, same_schedule=True) < bound


@pytest.mark.parametrize("steps", [1, 27, 100])
def test_deepfloyd_if_ddpm_matches_diffusers(steps):
    """IF's DDPMScheduler config: cosine betas, learned-range variance, dynamic thresholding at 0.95 up to 1.5."""
    config = IF_SCHEDULER
    resolved = SchedulerConfig.from_dict(config).resolve()
    assert resolved.options == {"dynamic_threshold_percentile": 0.95, "dynamic_threshold_max": 1.5}
    ours, reference = pair(config, "ddpm", same_schedule=True)
    timesteps = ours.set_timesteps(steps)
    reference.set_timesteps(steps)
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, 3, 8, 8), dtype=torch.float64, generator=generator)
    for i, t in enumerate(reference.timesteps):
        output = torch.randn((2, 6, 8, 8), dtype=torch.float64, generator=generator) * 3
        output[:, 3:] = torch.tanh(output[:, 3:])  # the variance interpolation value in [-1, 1]
        noise = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        stepped = reference.step(output, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        assert relative(ours.step(output.numpy(), timesteps[i], x.numpy(), noise.numpy()), stepped) < 1e-10
        x = stepped


def test_from_config_semantics():
    """A key the folder lacks takes the chosen class's default; a key it gives is used by every class."""
    folder = SchedulerConfig.from_dict(REAL["sd15"])
    assert folder.default_sampler == "pndm"
    assert folder.resolve().schedule.timestep_spacing == "leading"
    assert folder.resolve().schedule.set_alpha_to_one is False
    assert folder.resolve("ddim").schedule.set_alpha_to_one is False  # the folder's key
    assert folder.resolve("euler").schedule.timestep_spacing == "linspace"  # Euler's default
    assert folder.resolve("ddpm").schedule.clip_sample is False  # folder's; DDPM's default is True
    no_clip = SchedulerConfig.from_dict({k: v for k, v in REAL["sd15"].items() if k != "clip_sample"})
    assert no_clip.resolve("ddim").schedule.clip_sample is True
    trailing = SchedulerConfig.from_dict(CONFIGS["sd15_trailing"])
    assert {trailing.resolve(s).schedule.timestep_spacing for s in CLASSES} == {"trailing"}
    used_defaults = SchedulerConfig.from_dict(dict(CONFIGS["sd15_trailing"], _use_default_values=["timestep_spacing"]))
    assert used_defaults.resolve("euler").schedule.timestep_spacing == "linspace"
    assert SchedulerConfig.from_dict(REAL["sd21"]).resolve().sampler == "ddim"


@pytest.mark.parametrize("config, sampler, field", [
    ({k: v for k, v in REAL["sd15"].items() if k != "skip_prk_steps"}, None, "skip_prk_steps"),
    (dict(REAL["sd15"], use_exponential_sigmas=True), "euler", "use_exponential_sigmas"),
    (dict(REAL["sd15"], interpolation_type="log_linear"), "euler", "interpolation_type"),
    (dict(REAL["sd15"], timestep_type="continuous"), "euler", "timestep_type"),
    (dict(REAL["sd15"], solver_order=3), "dpmpp_2m", "solver_order"),
    (dict(REAL["sd15"], algorithm_type="sde-dpmsolver++"), "dpmpp_2m", "algorithm_type"),
    (dict(REAL["sd15"], thresholding=True), "dpmpp_2m", "thresholding"),
    (dict(REAL["sd15"], variance_type="learned"), "ddpm", "variance_type"),
    (dict(REAL["sd15"], beta_schedule="sigmoid"), "ddim", "beta_schedule"),
    (dict(REAL["sd15"], prediction_type="sample"), "euler_ancestral", "prediction_type"),
    (dict(REAL["sd15"], _class_name="UniPCMultistepScheduler"), None, "UniPCMultistepScheduler"),
])
def test_unimplemented_fields_are_refused_by_name(config, sampler, field):
    with pytest.raises(ConfigError, match=field):
        SchedulerConfig.from_dict(config).resolve(sampler)


@pytest.mark.parametrize("strength", [0.6, 0.8, 0.9])
@pytest.mark.parametrize("sampler", ["pndm", "lms", "dpmpp_2m", "euler"])
def test_img2img_tail_matches_diffusers(sampler, strength):
    """Starting part-way as diffusers' img2img pipeline does: the tail timesteps[n - int(n strength):] of the
    schedule (set_begin_index there); PNDM's schedule repeats its second timestep (indices 1, 2 at n = 10):
    strength 0.9 starts on the first occurrence, 0.8 on the second."""
    ours, reference = pair(REAL["sd15"], sampler, same_schedule=True)
    timesteps = ours.set_timesteps(10)
    reference.set_timesteps(10)
    if hasattr(reference, "sigmas"):
        reference.sigmas = torch.tensor(ours.sigmas, dtype=torch.float64)
    start = 10 - int(10 * strength)
    if sampler != "pndm":  # PNDM has no step index: it starts wherever step() is first called
        reference.set_begin_index(start)
    generator = torch.Generator().manual_seed(3)
    clean, noise = (torch.randn(SHAPE, dtype=torch.float64, generator=generator) for _ in range(2))
    x_ref = reference.add_noise(clean, noise, reference.timesteps[start:start + 1])
    x = ours.add_noise(clean.numpy(), noise.numpy(), timesteps[start])
    assert relative(x, x_ref) < 1e-12
    for i in range(start, len(timesteps)):
        output = torch.randn(SHAPE, dtype=torch.float64, generator=generator)
        t = reference.timesteps[i]
        assert relative(ours.scale_model_input(x, timesteps[i]), reference.scale_model_input(x_ref, t)) < 1e-6
        x_ref = reference.step(output, t, x_ref).prev_sample.double()
        x = ours.step(output.numpy(), timesteps[i], x)
        assert relative(x, x_ref) < 1e-6, (sampler, i)
