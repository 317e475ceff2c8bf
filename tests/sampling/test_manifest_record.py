"""The resolved sampler travels from a folder's scheduler config through export's settings and the manifest's
JSON to the runtime, which builds the same sampler (or another one, resolved as diffusers' from_config does)."""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from genrt.errors import GenrtError
from genrt.export.cli_export import print_schedulers
from genrt.export.ldm import ldm_settings
from genrt.runtime.pipelines.ldm import sampler_factory
from genrt.sampling import PNDMSampler, SchedulerConfig
from genrt.sdk.ldm.config import get_config
from genrt.settings import LdmSettings
from genrt.typedjson import from_json, to_json

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers under numpy 2

SD15 = json.loads((Path(__file__).parents[1] / "fixtures" / "sd15" / "scheduler" / "scheduler_config.json").read_text())


def recorded(config: dict | None) -> LdmSettings:
    """Export's settings for the tiny model with ``config`` as its folder's scheduler config, through JSON."""
    settings = ldm_settings(get_config("tiny").replace(scheduler_config=config))
    return from_json(LdmSettings, json.loads(json.dumps(to_json(settings))), "settings", GenrtError)


def test_the_folder_scheduler_is_recorded_and_rebuilt():
    settings = recorded(SD15)
    assert settings.sampler == "pndm" and settings.scheduler_config == SD15
    assert settings.scheduler == dataclasses.asdict(SchedulerConfig.from_dict(SD15).resolve().schedule)
    assert settings.scheduler["set_alpha_to_one"] is False and settings.scheduler["timestep_spacing"] == "leading"
    sampler = sampler_factory(None, settings)()
    assert isinstance(sampler, PNDMSampler)
    reference = diffusers.PNDMScheduler.from_config(SD15)
    reference.set_timesteps(20)
    np.testing.assert_array_equal(sampler.set_timesteps(20), reference.timesteps.numpy())


@pytest.mark.parametrize("name, class_name", [("euler", "EulerDiscreteScheduler"), ("dpmpp_2m", "DPMSolverMultistepScheduler"),
                                              ("ddim", "DDIMScheduler"), ("lms", "LMSDiscreteScheduler")])
def test_a_sampler_chosen_at_run_time_follows_from_config(name, class_name):
    sampler = sampler_factory(name, recorded(SD15))()
    reference = getattr(diffusers, class_name).from_config(SD15)
    reference.set_timesteps(30)
    np.testing.assert_array_equal(sampler.set_timesteps(30), reference.timesteps.numpy())
    if hasattr(reference, "sigmas"):
        np.testing.assert_allclose(sampler.sigmas, reference.sigmas.numpy(), rtol=2e-5)


def test_a_genrt_schedule_is_used_as_it_is_and_bad_configs_are_refused():
    settings = recorded(None)
    assert settings.sampler == "ddim" and settings.scheduler_config is None
    euler = sampler_factory("euler", settings)()
    assert euler.config.timestep_spacing == "leading"  # the preset's own, for every sampler
    with pytest.raises(GenrtError, match="skip_prk_steps"):
        recorded({k: v for k, v in SD15.items() if k != "skip_prk_steps"})


def test_export_prints_the_resolved_scheduler(capsys):
    print_schedulers(recorded(SD15))
    line = capsys.readouterr().out.strip()
    assert line.startswith("scheduler: pndm (PNDMScheduler): ") and "set_alpha_to_one=False" in line
