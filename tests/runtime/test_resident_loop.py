"""The device-resident denoising loop (genrt.runtime.loops.guided) on ONNX Runtime CPU: the affine step
coefficients reproduce the samplers, the guided-step graph matches numpy, and a tiny exported ldm folder
gives the host loop's latents and images while the U-Net only ever sees and returns device tensors."""

import numpy as np
import pytest

import genrt.runtime
from genrt.export.folder import export_folder
from genrt.export.ldm import plan as ldm_plan
from genrt.export.options import ExportOptions
from genrt.errors import InputError
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, OrtTensor
from genrt.runtime.loops.guided import affine_coefficients, resident_capable
from genrt.runtime.loops.step_graphs import STEP_INPUTS, STEP_OUTPUTS, guided_step_graph
from genrt.sampling import ScheduleConfig, make_sampler
from tests.conftest import relative_error
from genrt.manifest import read_manifest
from tests.runtime.tiny.exports import write_tokenizer

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]
SAMPLERS = [("ddim", {}), ("ddim", {"eta": 0.7}), ("euler", {}), ("euler_ancestral", {})]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name, options", SAMPLERS)
@pytest.mark.parametrize("strength_start", [0, 3])
def test_affine_coefficients_reproduce_sampler_steps(name, options, prediction, strength_start):
    config = ScheduleConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            prediction_type=prediction, steps_offset=1)
    factory = lambda: make_sampler(name, config, **options)  # noqa: E731
    num_steps = 6
    sampler = factory()
    timesteps = [int(t) for t in sampler.set_timesteps(num_steps)][strength_start:]
    first_scale, rows = affine_coefficients(factory, num_steps, timesteps)
    assert rows.shape == (len(timesteps), 4) and rows.dtype == np.float64
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 3, 5)) * 3.0
    scales = [first_scale] + list(rows[:-1, 3])
    for index, t in enumerate(timesteps):
        np.testing.assert_allclose(sampler.scale_model_input(x, t), scales[index] * x, rtol=1e-14)
        output, noise = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
        a, b, c, _ = rows[index]
        expected = sampler.step(output, t, x, noise if sampler.needs_noise else None)
        assert relative_error(a * x + b * output + c * noise, expected) < 1e-13
        x = expected
    assert rows[-1, 3] == 1.0
    assert (rows[:, 2] != 0).any() == sampler.needs_noise


def test_only_affine_samplers_are_resident():
    config = ScheduleConfig()
    assert resident_capable(make_sampler("ddim", config)) and resident_capable(make_sampler("euler", config))
    assert not resident_capable(make_sampler("ddim", config, dynamic_threshold_percentile=0.995))
    assert not resident_capable(make_sampler("dpmpp_2m", config))
    assert not resident_capable(make_sampler("ddpm", config))


@pytest.mark.parametrize("guided", [True, False])
def test_step_graph_matches_numpy(export_dir, guided):
    graph = guided_step_graph(read_manifest(export_dir).component("unet"), guided)
    step = OnnxRuntimeRunner(graph.spec, threads=1, model=graph.model)
    rng = np.random.default_rng(2)
    x, noise = (rng.standard_normal((2, 4, 8, 10)).astype(np.float32) for _ in range(2))
    output = rng.standard_normal((4 if guided else 2, 4, 8, 10)).astype(np.float32)
    coefficients = np.array([0.9, -0.3, 0.25, 0.6], np.float32)
    guidance = np.array([7.5], np.float32)
    feeds = [x, output, noise, coefficients, guidance]
    outputs = step.infer({name: step.upload(array) for name, array in zip(STEP_INPUTS, feeds)}, to_host=False)
    x_next, unet_input = (outputs[name].to_host() for name in STEP_OUTPUTS)
    guided_output = output[:2] + guidance[0] * (output[2:] - output[:2]) if guided else output
    expected = coefficients[0] * x + coefficients[1] * guided_output + coefficients[2] * noise
    np.testing.assert_allclose(x_next, expected, rtol=1e-6, atol=1e-6)
    scaled = coefficients[3] * expected
    np.testing.assert_allclose(unet_input, np.concatenate([scaled, scaled]) if guided else scaled,
                               rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident_ldm")
    plan = ldm_plan("tiny", "fp32", ExportOptions(random_weights=True, seed=0,
                                                  tokenizer=write_tokenizer(root / "tokenizer", "clip")))
    export_folder(plan, root / "export")
    return root / "export"


def generate(folder, sampler, guidance, resident, monkeypatch, **call):
    """Images, the latents fed to the VAE decoder, the U-Net's device-call count and the pipeline."""
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", sampler=sampler, threads=1, resident=resident) as pipe:
        assert pipe.resident == resident
        decoder, unet = pipe.runners["vae_decoder"], pipe.runners["unet"]
        seen = {"latents": [], "device_calls": 0}
        host_decode = decoder.infer

        def record_decoder(feeds):
            seen["latents"].append(feeds["latent"].copy())
            return host_decode(feeds)

        monkeypatch.setattr(decoder, "infer", record_decoder)
        if resident:
            device_infer = unet.infer

            def device_only(feeds, to_host=True):
                # the latents and the embeddings are device tensors; only the timesteps come from the host
                assert to_host is False, "the U-Net returned host arrays during a resident loop"
                assert all(isinstance(feeds[name], OrtTensor) and feeds[name].device == "cpu"
                           for name in ("sample", "encoder_hidden_states"))
                seen["device_calls"] += 1
                outputs = device_infer(feeds, to_host=to_host)
                assert all(isinstance(value, OrtTensor) for value in outputs.values())
                return outputs

            monkeypatch.setattr(unet, "infer", device_only)
        result = pipe(PROMPTS, guidance_scale=guidance, num_inference_steps=4, seed=5, **call)
        copies = sum(denoiser.host_copies for denoiser in pipe._denoisers.values())
    return result.images, seen["latents"][0] * np.float32(pipe.scaling_factor), seen["device_calls"], copies


@pytest.mark.parametrize("sampler, guidance", [("ddim", 6.0), ("euler_ancestral", 6.0), ("ddim", 1.0)])
def test_resident_loop_matches_host_loop(export_dir, monkeypatch, sampler, guidance):
    host_images, host_latents, _, _ = generate(export_dir, sampler, guidance, False, monkeypatch)
    images, latents, device_calls, copies = generate(export_dir, sampler, guidance, True, monkeypatch)
    assert device_calls == 4 and copies == 1  # 4 U-Net calls on device tensors, one copy of the latents to the host
    assert images.shape == host_images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    error = relative_error(latents, host_latents)
    print(f"{sampler} guidance {guidance}: latents rel err {error:.2e}, "
          f"image max diff {np.abs(images.astype(int) - host_images.astype(int)).max()}")
    assert error < 1e-5, error
    assert np.abs(images.astype(int) - host_images.astype(int)).max() <= 1
    assert host_images.std() > 1


def test_resident_loop_calls_callback_on_step_end_like_the_host_loop(export_dir, monkeypatch):
    """callback_on_step_end gets the step's latents on the host in both loops (one more copy a step when given)."""
    seen = {}
    for resident in (False, True):
        calls = seen[resident] = []
        callback = {"callback_on_step_end": lambda pipe, i, t, kwargs: calls.append((i, t, kwargs["latents"].copy()))}
        _, _, _, copies = generate(export_dir, "ddim", 6.0, resident, monkeypatch, **callback)
    assert copies == 1 + 4
    assert [call[:2] for call in seen[True]] == [call[:2] for call in seen[False]] and len(seen[True]) == 4
    for (_, _, device), (_, _, host) in zip(seen[True], seen[False]):
        assert device.shape == (2, 4, 16, 16) and relative_error(device, host) < 1e-5


def test_resident_img2img_matches_host_loop(export_dir, monkeypatch):
    """img2img starts part-way (2 of 4 steps), from the encoded image noised with the Karras sampler's add_noise."""
    image = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    host_images, host_latents, _, _ = generate(export_dir, "euler", 4.0, False, monkeypatch, image=image, strength=0.5)
    images, latents, device_calls, copies = generate(export_dir, "euler", 4.0, True, monkeypatch, image=image,
                                                     strength=0.5)
    assert device_calls == 2 and copies == 1
    assert relative_error(latents, host_latents) < 1e-5
    assert np.abs(images.astype(int) - host_images.astype(int)).max() <= 1


def test_resident_defaults_off_on_cpu_and_the_step_graph_is_checked_like_a_component(export_dir):
    with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", threads=1) as pipe:
        assert pipe.resident is False  # the default is resident only on onnxruntime-cuda
        unet = pipe.runners["unet"]
        graph = guided_step_graph(unet.spec, True)
        step = pipe.runners.open_graph(graph)
        assert graph.spec.profile["x"].max[0] * 2 == unet.spec.profile["sample"].max[0]  # B = N / 2
        feeds = {"x": np.zeros((2, 4, 8, 8), np.float32), "model_output": np.zeros((4, 4, 8, 8), np.float32),
                 "noise": np.zeros((2, 4, 8, 8), np.float32), "coefficients": np.zeros(4, np.float32),
                 "guidance": np.ones(1, np.float32)}
        with pytest.raises(InputError, match="input 'noise' .* 'B' is 2 here but 3 in input 'x'"):
            step.infer({**feeds, "x": np.zeros((3, 4, 8, 8), np.float32)})
        with pytest.raises(InputError, match="guided_step: input 'coefficients' has dtype float64"):
            step.infer({**feeds, "coefficients": np.zeros(4)})
