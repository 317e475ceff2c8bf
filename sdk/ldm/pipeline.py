"""The reference text-to-image / img2img pipeline of Stable Diffusion 1.x / 2.x in torch.

It is the ground truth the torch-free runtime (``genrt.runtime.pipelines.ldm``) is compared with, so
it follows the same algorithm and the same noise order as ``genrt.sdk.diffusion.sample`` and the
runtime; every draw is a float32 standard normal of shape (B, 4, h, w):

1. img2img only: the VAE posterior noise;
2. the initial latent noise (text2img: times ``init_noise_sigma``; img2img: mixed into the encoded
   latents at the first timestep kept, with ``sampler.add_noise``);
3. only for a stochastic sampler (``sampler.needs_noise``): one tensor per denoising step, drawn
   after that step's U-Net call and passed to ``sampler.step``.

The numbers come from a ``seed`` (``numpy.random.Generator(PCG64(seed))``, the runtime's default),
a ``torch.Generator`` (``torch.randn``, as ``genrt.sdk.diffusion.sample`` draws), or are given
explicitly as :class:`PipelineNoise`; the noise a call used is returned with its images. ``latents`` (text2img)
replaces only the initial noise, which is then not drawn. B is the number of prompts times
``num_images_per_prompt`` (each prompt's row repeated in place, [p0, p0, p1, p1], as diffusers does), and every
draw is one tensor for the whole batch, so each image has its own noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from genrt.errors import InputError
from genrt.sampling import classifier_free_guidance, make_sampler
from genrt.sdk.ldm.autoencoder import DiagonalGaussian
from genrt.sdk.ldm.model import LatentDiffusion
from genrt.sdk.ldm.text_encoder import tokenize

Draw = Callable[[tuple], torch.Tensor]


@dataclass
class PipelineNoise:
    """Every random tensor of one pipeline call (float32, shapes (B, 4, h, w)), in draw order."""

    initial: torch.Tensor  # text2img: x_T / init_noise_sigma; img2img: the noise mixed into the image latents
    steps: list[torch.Tensor] = field(default_factory=list)  # stochastic samplers: one per step run
    posterior: torch.Tensor | None = None  # img2img: the sample of q(z | image) is mean + std * posterior

    def draws(self) -> list[torch.Tensor]:
        return ([self.posterior] if self.posterior is not None else []) + [self.initial, *self.steps]


def draw_noise(seed: int | None, latent_shape: tuple[int, int, int, int], noised_steps: int = 0,
               img2img: bool = False) -> PipelineNoise:
    """The noise the runtime draws for ``seed``; ``noised_steps``: steps run by a stochastic sampler (else 0)."""
    draw = _seeded_draw(seed)
    posterior = draw(latent_shape) if img2img else None
    initial = draw(latent_shape)
    return PipelineNoise(initial=initial, steps=[draw(latent_shape) for _ in range(noised_steps)], posterior=posterior)


def _seeded_draw(seed: int | None) -> Draw:
    rng = np.random.Generator(np.random.PCG64(seed))
    return lambda shape: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def _generator_draw(generator: torch.Generator) -> Draw:
    return lambda shape: torch.randn(shape, dtype=torch.float32, generator=generator, device=generator.device)


class _Replay:
    """Hands out the tensors of a :class:`PipelineNoise` in draw order, refusing a missing or misshaped one."""

    def __init__(self, noise: PipelineNoise):
        self.total = len(noise.draws())
        self.pending = noise.draws()

    def __call__(self, shape: tuple) -> torch.Tensor:
        if not self.pending:
            raise InputError(f"the given noise ran out: {self.total} tensors for more draws of {shape}",
                             fix="pass posterior (img2img), initial and one step tensor per step of a stochastic sampler")
        tensor = self.pending.pop(0)
        if tuple(tensor.shape) != tuple(shape):
            raise InputError(f"a noise tensor has shape {tuple(tensor.shape)}", fix=f"pass tensors of shape {shape}")
        return tensor


def img2img_timesteps(timesteps: list[int], num_steps: int, strength: float) -> list[int]:
    """The tail of the schedule img2img runs: the last ``int(num_steps * strength)`` timesteps."""
    if not 0.0 < strength <= 1.0:
        raise InputError(f"strength is {strength}", fix="pass 0 < strength <= 1")
    tail = timesteps[num_steps - min(int(num_steps * strength), num_steps):]
    if not tail:
        raise InputError(f"strength {strength} leaves no denoising step out of {num_steps}",
                         fix="raise strength or num_inference_steps")
    return tail


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] -> (B, H, W, 3) uint8, rounding ``(x + 1) * 127.5``."""
    scaled = ((images.float() + 1.0) * 127.5).clamp(0.0, 255.0)
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"image has dtype {images.dtype} and shape {images.shape}",
                         fix="pass uint8 RGB pixels of shape (B, H, W, 3)")
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


@dataclass
class ReferenceResult:
    """The output of one call."""

    images: np.ndarray  # (B, H, W, 3) uint8
    latents: torch.Tensor  # (B, 4, h, w) the final latents (before dividing by the scaling factor)
    decoded: torch.Tensor  # (B, 3, H, W) the VAE output in [-1, 1] (before clipping and rounding)
    noise: PipelineNoise  # every random tensor the call used


class StableDiffusionReference:
    """``pipe(prompt, ...) -> ReferenceResult`` with a :class:`LatentDiffusion` that has a tokenizer.

    ``sampler``: a name of ``genrt.sampling.make_sampler`` ("ddim", "euler", ...; None: the folder's
    scheduler class, else DDIM), resolved from the folder's scheduler config as diffusers' ``from_config``
    (``LDMConfig.scheduler``), with its ``sampler_options``; a fresh sampler is made for every call.
    """

    def __init__(self, model: LatentDiffusion, sampler: str | None = None, **sampler_options):
        if model.tokenizer is None:
            raise InputError("the model has no tokenizer",
                             fix="load it from a diffusers folder with tokenizer/, or set model.tokenizer")
        self.model = model.eval()
        self.config = model.config
        self.scheduler = self.config.scheduler(sampler)  # fails early on a bad name or config
        self.sampler_options = {**self.scheduler.options, **sampler_options}
        self._new_sampler()

    def _new_sampler(self):
        return make_sampler(self.scheduler.sampler, self.scheduler.schedule, **self.sampler_options)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negatives: list[str] | None) -> torch.Tensor:
        """Text embeddings (B, 77, D), or [negatives; prompts] (2B, 77, D) for guidance."""
        texts = prompts if negatives is None else negatives + prompts
        ids = tokenize(self.model.tokenizer, texts, self.config.text_encoder.max_position_embeddings)
        return self.model.text_encoder(ids.to(self._device))

    @property
    def _device(self) -> torch.device:
        return next(self.model.unet.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        noise: PipelineNoise | None = None,
        image: np.ndarray | None = None,
        strength: float = 0.8,
        callback_on_step_end: Callable[[object, int, object, dict], object] | None = None,
    ) -> ReferenceResult:
        """Generate images, ``num_images_per_prompt`` per prompt; with ``image`` ((B, H, W, 3) uint8, one per
        prompt) do img2img at ``strength``.

        Randomness from at most one of ``seed``, ``generator``, ``noise`` (see the module docstring); ``latents``
        (text2img, (B * num_images_per_prompt, 4, h, w)) is the initial noise instead of a draw. Guidance is skipped
        when the scale is 1. ``callback_on_step_end(pipe, step_index, timestep, {"latents": latents})`` is called
        after each step (its return value is ignored, as by the runtime).
        """
        if sum(x is not None for x in (seed, generator, noise)) > 1:
            raise InputError("more than one of seed, generator and noise were given", fix="pass one of them")
        if latents is not None and (noise is not None or image is not None):
            raise InputError("latents were given with noise or image", fix="pass latents for text2img, without noise")
        if not isinstance(num_images_per_prompt, int) or isinstance(num_images_per_prompt, bool) \
                or num_images_per_prompt < 1:
            raise InputError(f"num_images_per_prompt is {num_images_per_prompt!r}; expected an int >= 1",
                             fix="pass num_images_per_prompt as an int >= 1")
        draw = _Replay(noise) if noise is not None else (
            _generator_draw(generator) if generator is not None else _seeded_draw(seed))
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [""] * len(prompts) if negative_prompt is None else (
            [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt))
        if len(negatives) != len(prompts):
            raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts",
                             fix="pass one negative prompt, or one per prompt")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        guidance = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        use_cfg = guidance != 1.0
        batch, device, dtype = len(prompts), self._device, next(self.model.unet.parameters()).dtype
        factor = self.config.vae.downsample_factor
        multiple = factor * 2 ** (len(self.config.unet.block_out_channels) - 1)  # pixels per U-Net bottom cell
        if image is not None:
            pixels = from_uint8(image)
            height, width = pixels.shape[2], pixels.shape[3]
            if pixels.shape[0] * num_images_per_prompt != batch:
                raise InputError(f"{pixels.shape[0]} images for {batch // num_images_per_prompt} prompts",
                                 fix="pass one image per prompt")
            pixels = pixels.repeat_interleave(num_images_per_prompt, dim=0)
        height, width = height or self.config.image_size, width or self.config.image_size
        if height % multiple or width % multiple:
            raise InputError(f"size {height}x{width} is not a multiple of {multiple}",
                             fix=f"pass height and width divisible by {multiple} (the autoencoder and U-Net downsampling)")
        shape = (batch, self.config.vae.latent_channels, height // factor, width // factor)
        used = PipelineNoise(initial=torch.empty(0))

        given = latents  # the name is the running latents below
        if given is not None and tuple(given.shape) != shape:
            raise InputError(f"latents have shape {tuple(given.shape)}; expected {shape}",
                             fix=f"pass latents of shape {shape} (batch = prompts x num_images_per_prompt)")

        def take(kind: str) -> torch.Tensor:
            tensor = given.float().cpu() if kind == "initial" and given is not None else draw(shape)
            if kind == "step":
                used.steps.append(tensor)
            else:
                setattr(used, kind, tensor)
            return tensor.to(device, dtype)

        # 1. text embeddings: [uncond; cond] in one batch for guidance
        embeddings = self.encode_prompts(prompts, negatives if use_cfg else None).to(dtype)

        # 2. timesteps and the initial latents
        sampler = self._new_sampler()
        timesteps = sampler.set_timesteps(num_inference_steps).tolist()  # ints, or float32 values (Euler / LMS)
        if image is None:
            latents = take("initial") * sampler.init_noise_sigma
        else:
            timesteps = img2img_timesteps(timesteps, num_inference_steps, strength)
            posterior = DiagonalGaussian(self.model.vae.encode(pixels.to(device, dtype)))
            clean = posterior.sample(take("posterior")) * self.config.latent_scaling_factor
            latents = sampler.add_noise(clean, take("initial"), timesteps[0])

        # 3. denoising loop with classifier-free guidance
        for index, t in enumerate(timesteps):
            model_input = sampler.scale_model_input(latents, t)
            if use_cfg:
                model_input = torch.cat([model_input, model_input])
            t_batch = torch.full((model_input.shape[0],), float(t), dtype=torch.float32, device=device)
            output = self.model.unet(model_input, t_batch, embeddings)
            if use_cfg:
                output = classifier_free_guidance(output[:batch], output[batch:], guidance)
            latents = sampler.step(output, t, latents, take("step") if sampler.needs_noise else None)
            if callback_on_step_end is not None:
                callback_on_step_end(self, index, t, {"latents": latents})
        if noise is not None and draw.pending:
            raise InputError(f"{len(draw.pending)} noise tensors were left unused",
                             fix="pass step noise only for stochastic samplers, one per step run")

        # 4. decode latents / scaling factor, then to uint8
        decoded = self.model.vae.decode(latents / self.config.latent_scaling_factor)
        return ReferenceResult(images=to_uint8(decoded), latents=latents, decoded=decoded, noise=used)
