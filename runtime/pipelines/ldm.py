"""Latent diffusion (Stable Diffusion 1.x/2.x) on exported components, without torch.

text2img: prompt + negative prompt -> CLIP tokens -> ``text_encoder`` -> denoising loop with
classifier-free guidance (uncond and cond batched through one ``unet`` call) -> ``vae_decoder`` on
``latents / latent_scaling_factor`` -> uint8 (B, H, W, 3). img2img adds ``vae_encoder`` and starts
the loop part-way: of the ``num_inference_steps`` timesteps only the last ``int(num_inference_steps * strength)`` run,
from the encoded image noised to the first of them with ``sampler.add_noise(x0, noise, t)``.

Noise order (one ``numpy.random.Generator(PCG64(seed))``, or the ``generator`` passed in; every
draw is ``standard_normal(shape, dtype=float32)``), the order of ``genrt.sdk.diffusion.sample`` so a
torch reference fed the same numbers reproduces a call. B is the number of prompts times ``num_images_per_prompt``
(each prompt's row repeated in place, [p0, p0, p1, p1], as diffusers does): every draw is one tensor for the whole
batch, so each image has its own noise, the rows of one draw (diffusers' single-generator order):

1. img2img only: the VAE posterior noise, (B, 4, h, w);
2. the initial latent noise, (B, 4, h, w) (text2img: times ``init_noise_sigma``; img2img: mixed
   into the encoded latents at the first timestep kept); text2img's is not drawn when ``latents`` is given;
3. only for a stochastic sampler (``sampler.needs_noise``): one (B, 4, h, w) tensor per denoising
   step, drawn after that step's UNet call and passed to ``sampler.step(..., noise)``.

Where the loop runs: on the GPU backends (``onnxruntime-cuda``, ``tensorrt``; or with ``resident=True`` on any
backend) and a DDIM (no thresholding) / Euler / Euler ancestral sampler, the latents stay on the device for the whole
loop (``genrt.runtime.loops.guided``: the U-Net's output goes straight into a small guided-step graph and its
output back into the U-Net; one copy to the host before the VAE decoder). Other samplers (DDPM, DDIM
with dynamic thresholding, DPM-Solver++(2M), a sampler factory) and ``resident=False`` use the host loop below,
one U-Net call on host arrays per step with guidance and ``sampler.step`` in numpy. Both draw the same
noise in the same order.

Settings read: the manifest's :class:`~genrt.settings.LdmSettings`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from genrt import validate
from genrt.errors import InputError
from genrt.manifest import Manifest
from genrt.runtime.pipelines.common import (GenerationResult, NoiseSource, Pipeline, RunnerOptions, StepEndCallback,
                                            Stopwatch, from_uint8, gaussian, images_per_prompt, initial_noise,
                                            noise_source, prompt_tokenizer, prompts_and_negatives, step_end_hook,
                                            to_uint8)
from genrt.runtime.loops.guided import ResidentDenoiser, affine_coefficients, resident_capable
from genrt.runtime.loops.step_graphs import guided_step_graph
from genrt.sampling import ScheduleConfig
from genrt.settings import LdmSettings

# Largest height/width of a folder whose U-Net has no size profile (hand-written folders).
UNBOUNDED_SIZE = 1 << 16
# Log-variance range of the VAE posterior (as in the LDM autoencoder).
LOGVAR_RANGE = (-30.0, 20.0)


class LatentDiffusionPipeline(Pipeline):
    """``pipe(prompt, ...) -> GenerationResult``. ``sampler`` is a sampler name of ``genrt.sampling``
    (None: the manifest's, the folder's scheduler class) or a factory ``config_dict -> sampler`` following the protocol in
    docs/contracts.md. The VAE encoder is opened only when the export has it (img2img). ``resident``:
    keep the latents on the device during the loop (None: on the GPU backends; True also on
    ``onnxruntime-cpu``, where it runs the same device path in host memory; samplers that are not
    affine per step always use the host loop)."""

    family = "ldm"

    def __init__(self, manifest: Manifest, options: RunnerOptions = RunnerOptions(),
                 sampler: str | Callable | None = None):
        names = ["text_encoder", "unet", "vae_decoder"] + (["vae_encoder"] if "vae_encoder" in manifest.components else [])
        super().__init__(manifest, names, options)
        settings: LdmSettings = manifest.settings
        self.scaling_factor = settings.latent_scaling_factor
        self.default_guidance = settings.guidance_scale
        self.default_steps = settings.num_steps
        self._sampler_factory = sampler_factory(sampler, settings)
        ids_spec = manifest.component("text_encoder").input("input_ids")
        self.tokenizer = prompt_tokenizer(manifest, settings.tokenizer, max_length=int(ids_spec.shape[1]))
        unet_profile = manifest.component("unet").profile.get("sample")
        self.vae_factor = settings.vae_factor
        self.size_step = settings.vae_factor * settings.unet_factor  # height and width are multiples of this
        self.size_range = ((self.vae_factor * min(unet_profile.min[2:]), self.vae_factor * max(unet_profile.max[2:]))
                           if unet_profile else (self.size_step, UNBOUNDED_SIZE))
        self.max_steps = ScheduleConfig.from_dict(dict(settings.scheduler)).num_train_timesteps
        self.latent_channels = settings.latent_channels
        opt = unet_profile.opt if unet_profile else None
        self.default_size = (self.vae_factor * opt[2], self.vae_factor * opt[3]) if opt else None
        self._denoisers: dict[bool, ResidentDenoiser] = {}  # by use of guidance, built on first use

    def callback_steps(self, num_inference_steps: int | None = None) -> int:
        """Steps of a text-to-image call with ``num_inference_steps`` (None: the manifest's): one
        ``callback_on_step_end`` each."""
        return self.default_steps if num_inference_steps is None else num_inference_steps

    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None, *,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 num_images_per_prompt: int = 1, height: int | None = None, width: int | None = None,
                 seed: int | None = None, generator: NoiseSource | None = None, latents: np.ndarray | None = None,
                 image: np.ndarray | None = None, strength: float = 0.8, truncate: bool = True,
                 callback_on_step_end: StepEndCallback | None = None) -> GenerationResult:
        """Generate (B, H, W, 3) uint8 images, ``num_images_per_prompt`` per prompt; with ``image`` (uint8
        (B, H, W, 3), one per prompt) do img2img.

        ``guidance_scale`` 1.0 runs the UNet on the prompt alone (no unconditional half). ``latents``: text2img's
        initial noise (B * num_images_per_prompt, 4, H/f, W/f) before ``init_noise_sigma``, instead of a draw.
        ``callback_on_step_end(pipe, step_index, timestep, {"latents": latents})`` after each step (see common).
        """
        self.check_open()
        prompts, negatives = prompts_and_negatives(prompt, negative_prompt)
        if image is not None:  # uint8 -> (B, 3, H, W) in [-1, 1], one image per prompt
            image = from_uint8(image, np.float32)
            if image.shape[0] != len(prompts):
                raise InputError(f"{image.shape[0]} images for {len(prompts)} prompts", fix="pass one image per prompt")
        prompts, negatives = images_per_prompt(prompts, negatives, num_images_per_prompt)
        if image is not None:
            image = np.repeat(image, len(prompts) // image.shape[0], axis=0)
        num_steps = validate.integer(self.default_steps if num_inference_steps is None else num_inference_steps,
                                     "num_inference_steps", low=1, high=self.max_steps)
        guidance = validate.guidance(self.default_guidance if guidance_scale is None else guidance_scale)
        if image is not None and "vae_encoder" not in self.runners:
            raise InputError("img2img needs the vae_encoder component, which this export lacks",
                             fix="export again with `genrt export` including vae_encoder")
        if image is not None:
            strength = validate.number(strength, "strength", low=0.0, low_open=True, high=1.0)
        else:
            height, width = self._size(height, width)
        if image is not None and int(num_steps * strength) < 1:
            raise InputError(f"strength {strength} keeps no step of {num_steps}",
                             fix="raise strength or num_inference_steps so that num_inference_steps * strength >= 1")
        if image is not None and latents is not None:
            raise InputError("latents were given for img2img, whose initial latents come from the image",
                             fix="pass latents for text2img only (without image)")
        rng = noise_source(seed, generator)
        if latents is not None:  # checked before any work; nothing is drawn for them
            shape = (len(prompts), self.latent_channels, height // self.vae_factor, width // self.vae_factor)
            latents = initial_noise(rng, shape, latents)
        step_end = step_end_hook(self, callback_on_step_end)
        with self._lock:
            watch = Stopwatch()
            images = self._generate(prompts, negatives, num_steps, guidance, height, width, rng, latents, image,
                                    strength, truncate, step_end, watch)
            return GenerationResult(images=images, timings=watch.finish(), seed=seed)

    def _generate(self, prompts, negatives, num_steps, guidance, height, width, rng, latents, image, strength,
                  truncate, step_end, watch) -> np.ndarray:
        batch = len(prompts)
        use_cfg = guidance != 1.0
        # 1. text embeddings: [uncond; cond] in one batch, (2B, T, D) (cond only without guidance)
        with watch.stage("tokenize"):
            tokens = self.tokenizer((negatives + prompts) if use_cfg else prompts, truncate=truncate)
        with watch.stage("text_encoder"):
            embeddings = self.run("text_encoder", input_ids=tokens.input_ids)["text_embeddings"]
        # 2. timesteps and initial latents, (B, 4, h, w)
        sampler = self._sampler_factory()
        timesteps = np.asarray(sampler.set_timesteps(num_steps)).reshape(-1).tolist()  # float32 for Euler / LMS
        if image is None:
            shape = (batch, self.latent_channels, height // self.vae_factor, width // self.vae_factor)
            latents = (gaussian(rng, shape) if latents is None else latents) * np.float32(sampler.init_noise_sigma)
        else:
            with watch.stage("vae_encoder"):
                clean = self._encode(image, rng)
            timesteps = timesteps[num_steps - int(num_steps * strength):]
            latents = np.asarray(sampler.add_noise(clean, gaussian(rng, clean.shape), timesteps[0]), dtype=np.float32)
        # 3. denoising loop with classifier-free guidance
        with watch.stage("denoise"):
            if self.resident and resident_capable(sampler):
                latents = self._denoise_resident(sampler, latents, embeddings, num_steps, timesteps, guidance,
                                                 use_cfg, rng, step_end)
            else:
                latents = self._denoise_host(sampler, latents, embeddings, timesteps, guidance, use_cfg, rng,
                                             step_end)
        # 4. decode: the decoder takes latents already divided by the scaling factor
        with watch.stage("vae_decoder"):
            decoded = self.run("vae_decoder", latent=latents / np.float32(self.scaling_factor))["image"]
        return to_uint8(decoded)

    def _denoise_host(self, sampler, latents, embeddings, timesteps, guidance, use_cfg, rng, step_end) -> np.ndarray:
        """The loop on host arrays: latents (B, 4, h, w) at the first timestep -> final latents (B, 4, h, w)."""
        batch = latents.shape[0]
        hidden = self.upload("unet", encoder_hidden_states=embeddings)["encoder_hidden_states"]
        for index, t in enumerate(timesteps):
            model_input = np.asarray(sampler.scale_model_input(latents, t), dtype=np.float32)
            if use_cfg:
                model_input = np.concatenate([model_input, model_input])
            output = self.run("unet", sample=model_input,
                              timestep=np.full((model_input.shape[0],), t, dtype=np.float32),
                              encoder_hidden_states=hidden)["model_output"]
            if use_cfg:
                uncond, cond = output[:batch], output[batch:]
                output = uncond + np.float32(guidance) * (cond - uncond)
            noise = gaussian(rng, latents.shape) if sampler.needs_noise else None
            latents = np.asarray(sampler.step(output, t, latents, noise), dtype=np.float32)
            if step_end is not None:
                step_end(index, t, latents)
        return latents

    def _denoise_resident(self, sampler, latents, embeddings, num_steps, timesteps, guidance, use_cfg, rng,
                          step_end) -> np.ndarray:
        """The loop on the U-Net's device (``genrt.runtime.loops.guided``); same inputs and result as the host loop."""
        if use_cfg not in self._denoisers:
            unet = self.runners["unet"]
            step = self.runners.open_graph(guided_step_graph(unet.spec, use_cfg))
            self._denoisers[use_cfg] = ResidentDenoiser(unet, step, guided=use_cfg)
        coefficients = affine_coefficients(self._sampler_factory, num_steps, timesteps)
        draw_noise = (lambda: gaussian(rng, latents.shape)) if sampler.needs_noise else None
        return self._denoisers[use_cfg](latents, embeddings, timesteps, coefficients, guidance, draw_noise, step_end)

    def _encode(self, pixels: np.ndarray, rng: NoiseSource) -> np.ndarray:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), sampled from the VAE posterior (one
        posterior draw for all rows, so the repeats of num_images_per_prompt differ)."""
        moments = self.run("vae_encoder", image=pixels)["latent_moments"]
        channels = self.latent_channels
        mean, logvar = moments[:, :channels], np.clip(moments[:, channels:], *LOGVAR_RANGE)
        sample = mean + np.exp(0.5 * logvar) * gaussian(rng, mean.shape)
        return sample * np.float32(self.scaling_factor)

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        if height is None or width is None:
            if self.default_size is None:
                raise InputError("the export has no size profile for the UNet", fix="pass height and width")
            height = self.default_size[0] if height is None else height
            width = self.default_size[1] if width is None else width
        low, high = self.size_range
        return (validate.multiple(height, "height", self.size_step, low, high),
                validate.multiple(width, "width", self.size_step, low, high))


def sampler_factory(sampler: str | Callable | None, settings: LdmSettings) -> Callable[[], object]:
    """A zero-argument factory of fresh samplers (one per call: samplers carry per-run state): the manifest's
    resolved sampler and schedule, or another sampler resolved from the folder's scheduler config as diffusers'
    ``from_config`` does (a genrt schedule without one is used as it is)."""
    if callable(sampler):
        return lambda: sampler(dict(settings.scheduler))
    from genrt.sampling import ResolvedScheduler, SchedulerConfig, make_sampler

    name = sampler or settings.sampler
    recorded = ScheduleConfig.from_dict(dict(settings.scheduler))
    if settings.scheduler_config is None:
        resolved = ResolvedScheduler(name, recorded)
    else:  # the recorded prediction_type wins (export may override the folder's)
        resolved = SchedulerConfig.from_dict(settings.scheduler_config).resolve(name)
        resolved = ResolvedScheduler(name, resolved.schedule.replace(prediction_type=recorded.prediction_type),
                                     resolved.options)
    make_sampler(resolved.sampler, resolved.schedule, **resolved.options)  # a bad name fails at load
    return lambda: make_sampler(resolved.sampler, resolved.schedule, **resolved.options)
