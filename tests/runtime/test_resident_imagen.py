"""The device-resident DDPM loop of the Imagen cascade (genrt.runtime.loops.ddpm.ResidentDDPM) on ONNX Runtime
CPU: the TopK quantile equals numpy's, the step graph equals DDPMSampler.step, and a tiny exported cascade
gives the host loop's images while its U-Nets only ever see and return device tensors."""

from pathlib import Path

import numpy as np
import pytest

import genrt.runtime
from genrt.errors import GenrtError
from genrt.export.folder import export_folder
from genrt.export.imagen import plan as imagen_plan
from genrt.export.options import ExportOptions
from genrt.runtime.backends.onnxruntime import OnnxRuntimeRunner, OrtTensor
from genrt.manifest import ComponentEntry, TensorSpec, read_manifest
import genrt.runtime.pipelines.imagen as imagen_module
from genrt.runtime.pipelines.common import RunnerOptions
from genrt.runtime.pipelines.imagen import ImagenPipeline
from genrt.runtime.loops.ddpm import ResidentDDPM, ddpm_resident_capable, ddpm_rows
from genrt.runtime.loops.step_graphs import (DDPM_INPUTS, DDPM_ROW, STEP_OUTPUTS, TENSORRT_TOPK_LIMIT, ddpm_step_graph,
                                             quantile_order_statistics)
from genrt.sampling import DDPMSampler, ScheduleConfig, dynamic_threshold, make_sampler
from tests.conftest import relative_error

PROMPTS = ["a red cube on a blue sphere", "an oil painting of a cat"]


def step_runner(channels, size, learned, percentile, threshold_max):
    """A CPU runner of the DDPM step graph for a U-Net without a profile, with 2 * channels outputs."""
    unet = ComponentEntry(name="unet", onnx=Path("unet.onnx"), external_data=None, sha256="",
                          inputs=(TensorSpec("sample", "float32", ("B", channels, *size)),),
                          outputs=(TensorSpec("model_output", "float32", ("B", 2 * channels, *size)),),
                          profile={}, fp32_islands=(), engines=())
    graph = ddpm_step_graph(unet, channels, size, learned, percentile, threshold_max)
    return OnnxRuntimeRunner(graph.spec, threads=1, model=graph.model)


def run_step(step, x, output, noise, row, guidance):
    feeds = {name: step.upload(array)
             for name, array in zip(DDPM_INPUTS, (x, output, noise, row, np.array([guidance], np.float32)))}
    outputs = step.infer(feeds, to_host=False)
    return tuple(outputs[name].to_host() for name in STEP_OUTPUTS)


def test_order_statistics_of_the_documented_sizes():
    assert quantile_order_statistics(64 * 64 * 3, 0.995)[0] == 63  # base 64x64: far below TensorRT's limit
    assert quantile_order_statistics(256 * 256 * 3, 0.995)[0] == 985
    assert quantile_order_statistics(1024 * 1024 * 3, 0.995)[0] == 15730 > TENSORRT_TOPK_LIMIT
    assert quantile_order_statistics(1024 * 1024 * 3, 0.9988)[0] == 3776 <= TENSORRT_TOPK_LIMIT
    assert quantile_order_statistics(192, 1.0) == (1, 0.0)
    assert quantile_order_statistics(192, 0.001) == (192, 0.001 * 191)
    assert quantile_order_statistics(75, 0.5) == (38, 0.0)  # position 37 exactly: no interpolation


@pytest.mark.parametrize("shape, percentile, threshold_max", [
    ((3, 8, 8), 0.95, None),  # K = 11
    ((3, 8, 8), 1.0, None),  # K = 1: the maximum, no second order statistic
    ((3, 8, 8), 0.001, None),  # K = N: every value
    ((3, 5, 5), 0.5, None),  # position an integer: fraction 0
    ((3, 5, 5), 0.9, 1.5),  # capped at threshold_max (DeepFloyd IF)
    ((3, 64, 64), 0.995, None),  # K = 63, the base stage of the paper
])
@pytest.mark.parametrize("ties", [False, True])
def test_threshold_graph_equals_numpy_quantile(shape, percentile, threshold_max, ties):
    """Row (x_0 = model output, mean = x_0, no noise) and guidance 1: x_next is the thresholded cond half."""
    session = step_runner(shape[0], shape[1:], False, percentile, threshold_max)
    rng = np.random.default_rng(int(percentile * 1000) + shape[1])
    batch = 4
    values = rng.standard_normal((batch, *shape)) * np.array([3.0, 0.3, 1.2, 8.0]).reshape(4, 1, 1, 1)
    if ties:
        values = np.round(values * 2) / 2  # many equal magnitudes
    values = values.astype(np.float32)
    output = np.concatenate([rng.standard_normal(values.shape).astype(np.float32), values])
    row = dict.fromkeys(DDPM_ROW, 0.0) | {"output_scale": -1.0, "x0_divisor": 1.0, "mean_x0": 1.0}
    zeros = np.zeros_like(values)
    x_next, unet_input = run_step(session, zeros, output, zeros, np.array(list(row.values()), np.float32), 1.0)
    expected = dynamic_threshold(values, percentile, threshold_max)
    error = relative_error(x_next, expected)
    assert error < 1e-6, error
    np.testing.assert_array_equal(unet_input, np.concatenate([x_next, x_next]))
    flat = np.abs(values).reshape(batch, -1).astype(np.float64)
    s = np.clip(np.quantile(flat, percentile, axis=1), 1.0, threshold_max)
    assert relative_error(x_next, np.clip(values, -s[:, None, None, None], s[:, None, None, None])
                          / s[:, None, None, None]) < 1e-6


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("variance", ["learned_range", "fixed_small"])
@pytest.mark.parametrize("percentile, threshold_max", [(0.9, None), (0.95, 1.5), (None, None)])
def test_step_graph_equals_ddpm_sampler(prediction, variance, percentile, threshold_max):
    config = ScheduleConfig(beta_schedule="cosine", prediction_type=prediction, variance_type=variance)
    sampler = DDPMSampler(config, percentile, threshold_max)
    timesteps = [int(t) for t in sampler.set_timesteps(3)]
    assert timesteps[-1] == 0  # the last step adds no noise
    rows = ddpm_rows(sampler, timesteps)
    assert rows.shape == (3, len(DDPM_ROW)) and rows.dtype == np.float64
    learned = variance == "learned_range"
    session = step_runner(3, (6, 5), learned, percentile, threshold_max)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    guidance = 4.0
    for index, t in enumerate(timesteps):
        output = (rng.standard_normal((4, 6, 6, 5)) * 2).astype(np.float32)  # [uncond; cond], 6 channels
        noise = rng.standard_normal(x.shape).astype(np.float32)
        x_next, _ = run_step(session, x, output, noise, rows[index].astype(np.float32), guidance)
        eps = output[:2, :3] + np.float32(guidance) * (output[2:, :3] - output[:2, :3])
        expected = sampler.step(np.concatenate([eps, output[2:, 3:]], axis=1) if learned else eps, t, x, noise)
        error = relative_error(x_next, expected)
        assert error < 1e-6, (t, error)
        x = expected.astype(np.float32)


def test_only_the_stock_ddpm_sampler_is_resident():
    config = ScheduleConfig()
    assert ddpm_resident_capable(make_sampler("ddpm", config, dynamic_threshold_percentile=0.995))
    assert not ddpm_resident_capable(make_sampler("ddim", config, dynamic_threshold_percentile=0.995))
    assert not ddpm_resident_capable(type("Custom", (DDPMSampler,), {})(config))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident_imagen")
    export_folder(imagen_plan("tiny", "fp32", ExportOptions(random_weights=True, seed=0)), root / "export")
    return root / "export"


def generate(folder, resident, monkeypatch, stages=2, device_stages=("base_unet", "sr_unet_256")):
    """Images, each stage's final x before the clamp (of the resident stages when ``resident``), U-Net device
    calls by stage and the host copies."""
    with genrt.runtime.load(folder, backend="onnxruntime-cpu", threads=1, resident=resident) as pipe:
        assert pipe.resident == resident
        finals, device_calls = [], {}
        if resident:
            call = ResidentDDPM.__call__

            def record(self, *args, **kwargs):
                finals.append(call(self, *args, **kwargs))
                return finals[-1]

            monkeypatch.setattr(ResidentDDPM, "__call__", record)
            for name in device_stages:
                unet = pipe.runners[name]

                def device_only(feeds, to_host=True, name=name, infer=unet.infer):
                    assert to_host is False, f"{name} returned host arrays during a resident loop"
                    # everything but the timesteps was uploaded once per call
                    assert all(isinstance(value, OrtTensor) for key, value in feeds.items() if key != "timestep")
                    device_calls[name] = device_calls.get(name, 0) + 1
                    return infer(feeds, to_host=to_host)

                monkeypatch.setattr(unet, "infer", device_only)
        else:
            step, last = DDPMSampler.step, {}

            def record_step(self, *args, **kwargs):
                last[id(self)] = step(self, *args, **kwargs)
                if self._index == len(self._timesteps):
                    finals.append(last[id(self)])
                return last[id(self)]

            monkeypatch.setattr(DDPMSampler, "step", record_step)
        result = pipe(PROMPTS, num_inference_steps=[2, 2], stages=stages, seed=11)
        copies = sum(denoiser.host_copies for denoiser in pipe._denoisers.values())
    monkeypatch.undo()
    return result.images, finals, device_calls, copies


def test_resident_cascade_matches_host_loop(export_dir, monkeypatch):
    """Base 64x64 (learned-range variance, K = 63) and the 256x256 SR stage (fixed variance, low_res input)."""
    host_images, host_finals, _, _ = generate(export_dir, False, monkeypatch)
    images, finals, device_calls, copies = generate(export_dir, True, monkeypatch)
    assert device_calls == {"base_unet": 2, "sr_unet_256": 2} and copies == 2  # one copy to the host per stage
    assert images.shape == host_images.shape == (2, 256, 256, 3) and images.dtype == np.uint8
    assert [f.shape for f in finals] == [f.shape for f in host_finals] == [(2, 3, 64, 64), (2, 3, 256, 256)]
    for stage, (got, expected) in enumerate(zip(finals, host_finals)):
        error = relative_error(got, expected)
        print(f"stage {stage}: x rel err {error:.2e}")
        assert error < 1e-5, (stage, error)
    difference = np.abs(images.astype(int) - host_images.astype(int)).max()
    print(f"images max diff {difference}/255")
    assert difference <= 1
    assert host_images.std() > 5


def test_resident_sr_stage_is_exact_on_the_host_base_image(export_dir, monkeypatch):
    """With the base stage on the host loop in both runs, the SR stage's resident x equals the host loop's
    bit for bit: the difference above comes only from the base stage's rounding, amplified by the SR U-Net."""
    host_images, host_finals, _, _ = generate(export_dir, False, monkeypatch)
    monkeypatch.setattr(imagen_module, "ddpm_resident_capable", lambda s: s.config.variance_type == "fixed_small")
    images, finals, device_calls, copies = generate(export_dir, True, monkeypatch, device_stages=("sr_unet_256",))
    assert device_calls == {"sr_unet_256": 2} and copies == 1 and len(finals) == 1
    np.testing.assert_array_equal(finals[0], host_finals[1])
    np.testing.assert_array_equal(images, host_images)


def test_resident_defaults_off_on_cpu_and_tensorrt_needs_a_gpu(export_dir):
    with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", threads=1) as pipe:
        assert pipe.resident is False and pipe.choice.backend == "onnxruntime-cpu"
    # resident loops take any runner; without a GPU, TensorRT itself is refused with the fix
    with pytest.raises(GenrtError, match="backend 'tensorrt' needs a CUDA GPU.*fix: pip install 'genrt.trt.'"):
        ImagenPipeline(read_manifest(export_dir), RunnerOptions(backend="tensorrt", resident=True))
