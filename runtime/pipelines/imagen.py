"""The Imagen cascade on exported components, without torch: T5 -> base 64x64 -> SR 256 -> SR 1024.

1. The prompts and negative prompts are T5-tokenized (``input_ids`` and ``attention_mask``) and
   encoded once by ``t5_encoder``: (2B, T, D), rows [:B] unconditional, [B:] conditional.
2. ``base_unet`` denoises (B, 3, 64, 64) from Gaussian noise with classifier-free guidance (uncond
   and cond batched in one call; the first 3 output channels are guided, a learned variance in
   channels 3..5 comes from the conditional half) and dynamic thresholding of the predicted x_0
   inside the sampler (Saharia et al. 2022, sec. 2.3).
3. Each super-resolution stage (``sr_unet_256``, then ``sr_unet_1024``) upsamples the previous
   stage's image bilinearly (aligned corners, as DeepFloyd IF and ``genrt.sdk.imagen.augment``),
   corrupts it to the augmentation level ``sr_noise_level`` with the forward process (noise
   conditioning augmentation, sec. 2.5), and denoises its own (B, 3, H, W) noise conditioned on it.
4. Every stage's image is clamped to [-1, 1] (as ``genrt.sdk.imagen.cascade``), so a sampler that
   does not threshold (a custom factory) never hands the next stage out-of-range pixels.
Stages that the export lacks are skipped; ``stages=`` stops the cascade earlier.

Where the loop runs: on the GPU backends (``onnxruntime-cuda``, ``tensorrt``; or with ``resident=True`` on any
backend) a DDPM stage keeps its image on the device for the whole loop (``genrt.runtime.loops.ddpm.ResidentDDPM``):
the U-Net's [uncond; cond] output goes straight into a per-stage ONNX step graph (guidance, learned-range
variance from the conditional half, x_0, dynamic thresholding through a small TopK, posterior mean +
sigma noise, the next U-Net input). Per step only the timesteps, a row of 9 precomputed scalars and the
step's noise go to the device; the image comes back once at the stage's end, where the host clamps it,
upsamples it for the next stage and draws that stage's augmentation noise (once per stage, in the noise
order below). Other samplers (``ddim``, a custom factory's own class) keep the host loop. TensorRT's TopK takes
K < 3840 (``step_graphs.TENSORRT_TOPK_LIMIT``): on TensorRT a stage whose threshold needs more (a 1024 stage at
p = 0.995) keeps the host loop by default; ``resident=True`` refuses it when its step graph is built.

Noise order (one ``numpy.random.Generator(PCG64(seed))``, or the ``generator`` passed in; every
draw ``standard_normal(shape, dtype=float32)``), stage after stage. B is the number of prompts times
``num_images_per_prompt`` (each prompt's row repeated in place, [p0, p0, p1, p1], as diffusers does); each draw is
one tensor for the whole batch, so each image has its own noise:

1. SR stages only: the augmentation noise, (B, 3, H, W);
2. the initial noise x_T, (B, 3, H, W), times ``init_noise_sigma`` (the base stage's is not drawn when
   ``latents`` is given);
3. only for a stochastic sampler (``sampler.needs_noise``): one (B, 3, H, W) tensor per step, drawn
   after that step's U-Net call (the order of ``genrt.sdk.diffusion.sample``).

Settings read: the manifest's :class:`~genrt.settings.ImagenSettings` (one
:class:`~genrt.settings.ImagenStageSettings` per exported stage: resolution, guidance, schedule, steps).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from genrt import validate
from genrt.errors import GenrtError, InputError
from genrt.manifest import Manifest, ManifestError
from genrt.runtime.pipelines.common import (GenerationResult, NoiseSource, Pipeline, RunnerOptions, StepEndCallback,
                                            Stopwatch, gaussian, images_per_prompt, initial_noise, noise_source,
                                            prompt_tokenizer, prompts_and_negatives, step_end_hook, to_uint8)
from genrt.runtime.loops.ddpm import ResidentDDPM, ddpm_resident_capable, ddpm_rows
from genrt.runtime.loops.step_graphs import TENSORRT_TOPK_LIMIT, ddpm_step_graph, quantile_order_statistics
from genrt.settings import ImagenSettings

STAGES = ("base_unet", "sr_unet_256", "sr_unet_1024")
IMAGE_CHANNELS = 3


def upsample_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, C, h, w) -> (B, C, height, width), bilinear with aligned corners: output pixel i samples
    input position i * (h - 1) / (height - 1). Computed in float64, returned as float32."""

    def taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        position = np.arange(size_out) * scale
        low = np.floor(position).astype(np.int64)
        return low, np.minimum(low + 1, size_in - 1), position - low

    x = images.astype(np.float64)
    low, high, fraction = taps(x.shape[2], height)
    x = x[:, :, low] * (1 - fraction)[:, None] + x[:, :, high] * fraction[:, None]  # (B, C, height, w)
    low, high, fraction = taps(x.shape[3], width)
    x = x[:, :, :, low] * (1 - fraction) + x[:, :, :, high] * fraction  # (B, C, height, width)
    return x.astype(np.float32)


class ImagenPipeline(Pipeline):
    """``pipe(prompt, ...) -> GenerationResult`` with the last stage's (B, H, W, 3) uint8 images.
    ``sampler`` is a sampler name of ``genrt.sampling`` or a factory ``config_dict ->
    sampler`` (then thresholding is the factory's business). ``resident``: run DDPM stages on the U-Net's
    device (None: on the GPU backends; True also on ``onnxruntime-cpu``; see the module docstring)."""

    family = "imagen"

    def __init__(self, manifest: Manifest, options: RunnerOptions = RunnerOptions(),
                 sampler: str | Callable | None = None):
        self.stages = tuple(name for name in STAGES if name in manifest.components)
        if not self.stages or self.stages[0] != "base_unet":
            raise ManifestError(f"{manifest.root}: the imagen export has no base_unet",
                                fix="export again with `genrt export` including base_unet")
        super().__init__(manifest, ("t5_encoder",) + self.stages, options)
        settings: ImagenSettings = manifest.settings
        stage_settings = [settings.stage(name) for name in self.stages]
        missing = [name for name, stage in zip(self.stages, stage_settings) if stage is None]
        if missing:
            raise ManifestError(f"{manifest.root}: the imagen settings have no stage for {', '.join(missing)}",
                                fix="export again with `genrt export`")
        self.default_steps = tuple(stage.num_steps for stage in stage_settings)
        self.default_guidance = tuple(stage.guidance_scale for stage in stage_settings)
        self.noise_level = settings.sr_noise_level
        from genrt.sampling import NoiseSchedule, ScheduleConfig

        self._keeps_variance: dict[str, bool] = {}
        self._sampler_factories, self._augmentation = {}, {}
        for stage in stage_settings:
            scheduler = dict(stage.scheduler)
            self._sampler_factories[stage.component] = self._make_factory(
                stage.component, sampler or settings.sampler, scheduler, settings)
            self._augmentation[stage.component] = NoiseSchedule(ScheduleConfig.from_dict(scheduler))
        # prompts are padded to the encoder's fixed length, else to the settings' max_length
        length = manifest.component("t5_encoder").input("input_ids").shape[1]
        length = length if isinstance(length, int) else settings.max_length
        self.tokenizer = prompt_tokenizer(manifest, settings.tokenizer, max_length=length)
        self.resolutions = tuple((stage.resolution, stage.resolution) for stage in stage_settings)
        self._denoisers: dict[tuple, ResidentDDPM] = {}  # resident loops by stage and step settings, built on first use

    def _make_factory(self, stage: str, sampler: str | Callable, scheduler: dict,
                      settings: ImagenSettings) -> Callable[[], object]:
        """Fresh samplers for ``stage``; a named one thresholds x_0 dynamically (ddpm and ddim support it)."""
        if callable(sampler):
            self._keeps_variance[stage] = True  # a custom sampler gets every output channel
            return lambda: sampler(scheduler)
        from genrt.sampling import ScheduleConfig, make_sampler

        config = ScheduleConfig.from_dict(scheduler)
        options = {"dynamic_threshold_percentile": settings.threshold_percentile,
                   "dynamic_threshold_max": settings.threshold_max}
        make_sampler(sampler, config, **options)  # an unknown name or option fails at load, not at a call
        # DDPM with a learned variance reads output channels 3..5; the other samplers take 3 channels
        self._keeps_variance[stage] = sampler == "ddpm" and config.variance_type == "learned_range"
        return lambda: make_sampler(sampler, config, **options)

    def callback_steps(self, num_inference_steps: int | None = None) -> int:
        """Steps of a call through every stage with ``num_inference_steps`` per stage (None: each stage's
        from the manifest): one ``callback_on_step_end`` each."""
        if num_inference_steps is None:
            return sum(self.default_steps)
        return len(self.stages) * num_inference_steps

    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None, *,
                 num_inference_steps: int | Sequence[int] | None = None,
                 guidance_scale: float | Sequence[float] | None = None, num_images_per_prompt: int = 1,
                 stages: int | None = None, noise_level: int | None = None, seed: int | None = None,
                 generator: NoiseSource | None = None, latents: np.ndarray | None = None, truncate: bool = True,
                 callback_on_step_end: StepEndCallback | None = None) -> GenerationResult:
        """Run the cascade (its first ``stages`` stages) and return the last stage's uint8 images,
        ``num_images_per_prompt`` per prompt.

        ``num_inference_steps`` / ``guidance_scale``: one value for every stage or one per stage, base first.
        ``latents``: the base stage's initial noise (B * num_images_per_prompt, 3, r, r), instead of a draw.
        ``callback_on_step_end(pipe, step_index, timestep, {"latents": x})`` after each step of each stage, in
        cascade order; ``step_index`` counts from 0 within each stage, as in diffusers' one pipeline per stage.
        """
        self.check_open()
        prompts, negatives = images_per_prompt(*prompts_and_negatives(prompt, negative_prompt), num_images_per_prompt)
        count = len(self.stages) if stages is None else validate.integer(stages, "stages")
        if not 1 <= count <= len(self.stages):
            raise InputError(f"stages is {stages}; this export has {len(self.stages)} ({', '.join(self.stages)})",
                             fix=f"pass stages between 1 and {len(self.stages)}")
        levels = min(schedule.config.num_train_timesteps for schedule in self._augmentation.values())
        steps = _per_stage(num_inference_steps, self.default_steps, count, "num_inference_steps",
                           lambda value: validate.integer(value, "num_inference_steps", low=1, high=levels))
        guidance = _per_stage(guidance_scale, self.default_guidance, count, "guidance_scale", validate.guidance)
        level = validate.integer(self.noise_level if noise_level is None else noise_level, "noise_level", low=0,
                                 high=levels - 1)
        rng = noise_source(seed, generator)
        step_end = step_end_hook(self, callback_on_step_end)
        if latents is not None:  # checked before any work
            latents = initial_noise(rng, (len(prompts), IMAGE_CHANNELS) + self.resolutions[0], latents)
        with self._lock:
            watch = Stopwatch()
            # 1. T5 embeddings of [negatives; prompts] and their padding mask
            with watch.stage("tokenize"):
                tokens = self.tokenizer(negatives + prompts, truncate=truncate)
            with watch.stage("t5_encoder"):
                text = self.run("t5_encoder", input_ids=tokens.input_ids,
                                attention_mask=tokens.attention_mask)["text_embeddings"]
            # 2. base stage, then 3. the super-resolution stages
            images = None
            for index, name in enumerate(self.stages[:count]):
                with watch.stage(name):
                    images = self._stage(name, len(prompts), text, tokens.attention_mask, images, steps[index],
                                         guidance[index], level, rng, step_end, latents if index == 0 else None)
            return GenerationResult(images=to_uint8(images), timings=watch.finish(), seed=seed)

    def _stage(self, name: str, batch: int, text: np.ndarray, mask: np.ndarray, previous: np.ndarray | None,
               num_steps: int, guidance: float, level: int, rng: NoiseSource,
               step_end: Callable[[int, object, np.ndarray], None] | None,
               latents: np.ndarray | None = None) -> np.ndarray:
        """One cascade stage: (B, 3, h, w) from the previous stage (None for the base) -> (B, 3, H, W);
        ``latents``: the stage's initial noise, checked (None: drawn)."""
        height, width = self.resolutions[self.stages.index(name)]
        shape = (batch, IMAGE_CHANNELS, height, width)
        extra = {"text_embeddings": text}
        if any(spec.name == "text_mask" for spec in self.manifest.component(name).inputs):  # IF's U-Nets have none
            extra["text_mask"] = mask
        if previous is not None:
            # noise conditioning augmentation of the upsampled low-res image
            low_res = upsample_bilinear(previous, height, width)
            augmented = self._augmentation[name].add_noise(low_res, gaussian(rng, shape), level).astype(np.float32)
            extra |= {"low_res": np.concatenate([augmented, augmented]),
                     "noise_level": np.full((2 * batch,), level, dtype=np.int32)}
        sampler = self._sampler_factories[name]()
        timesteps = [int(t) for t in np.asarray(sampler.set_timesteps(num_steps)).reshape(-1)]
        x = (gaussian(rng, shape) if latents is None else latents) * np.float32(sampler.init_noise_sigma)
        if self.resident and ddpm_resident_capable(sampler) and self._keeps_variance[name] == (
                sampler.config.variance_type == "learned_range") and self._step_graph_fits(sampler, shape):
            key = (name, sampler.config.variance_type, sampler.dynamic_threshold_percentile,
                   sampler.dynamic_threshold_max)
            if key not in self._denoisers:
                self._denoisers[key] = self._resident_loop(name, sampler, shape)
            x = self._denoisers[key](x, extra, timesteps, ddpm_rows(sampler, timesteps), guidance,
                                      lambda: gaussian(rng, shape), step_end)
            return np.clip(x, -1.0, 1.0)
        extra = self.upload(name, **extra)  # once per stage, not once per step
        for index, t in enumerate(timesteps):
            model_input = np.asarray(sampler.scale_model_input(x, t), dtype=np.float32)
            output = self.run(name, sample=np.concatenate([model_input, model_input]),
                              timestep=np.full((2 * batch,), t, dtype=np.float32), **extra)["model_output"]
            uncond, cond = output[:batch], output[batch:]
            eps_uncond, eps_cond = uncond[:, :IMAGE_CHANNELS], cond[:, :IMAGE_CHANNELS]
            guided = eps_uncond + np.float32(guidance) * (eps_cond - eps_uncond)
            output = np.concatenate([guided, cond[:, IMAGE_CHANNELS:]], axis=1) if self._keeps_variance[name] else guided
            noise = gaussian(rng, shape) if sampler.needs_noise else None
            x = np.asarray(sampler.step(output, t, x, noise), dtype=np.float32)
            if step_end is not None:
                step_end(index, t, x)
        return np.clip(x, -1.0, 1.0)

    def _step_graph_fits(self, sampler, shape: tuple[int, ...]) -> bool:
        """Whether this backend can build the stage's step graph for (B, C, H, W) images: TensorRT's TopK takes at
        most TENSORRT_TOPK_LIMIT values. A stage beyond it keeps the host loop unless ``resident=True`` was asked
        (then the build says so)."""
        percentile = sampler.dynamic_threshold_percentile
        if self.backend != "tensorrt" or percentile is None or self.resident_asked:
            return True
        return quantile_order_statistics(int(np.prod(shape[1:])), percentile)[0] <= TENSORRT_TOPK_LIMIT

    def _resident_loop(self, name: str, sampler, shape: tuple[int, ...]) -> ResidentDDPM:
        """The DDPM loop of stage ``name`` for (B, C, H, W) images on its U-Net's device."""
        unet = self.runners[name]
        learned = sampler.config.variance_type == "learned_range"
        channels, size = shape[1], tuple(shape[2:])
        out_channels, needed = unet.spec.outputs[0].shape[1], 2 * channels if learned else channels
        if isinstance(out_channels, int) and out_channels < needed:
            raise GenrtError(f"{name} outputs {out_channels} channels for {channels}-channel images",
                             fix=f"export a U-Net with {needed} output channels, or resident=False")
        graph = ddpm_step_graph(unet.spec, channels, size, learned, sampler.dynamic_threshold_percentile,
                                sampler.dynamic_threshold_max)
        return ResidentDDPM(unet, self.runners.open_graph(graph))


def _per_stage(value, defaults: Sequence, count: int, name: str, check: Callable[[object], object]) -> list:
    """One value per stage from a scalar, a sequence or the manifest defaults, each passed through ``check``."""
    if value is None:
        values = list(defaults)
    elif np.isscalar(value):
        values = [value] * count
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        raise InputError(f"{name} is {value!r}", fix=f"pass one {name} for every stage, or a list with one per stage")
    if len(values) < count:
        raise InputError(f"{name} has {len(values)} values for {count} stages", fix=f"pass one {name} per stage")
    return [check(v) for v in values[:count]]
