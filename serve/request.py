"""What a caller asks for (:class:`GenerationRequest`, the JSON body of ``POST /v1/generate`` and one line of a
``genrt batch`` JSONL file) and the same request with every default filled in (:class:`Job`).

A :class:`Job` knows which other jobs may share its pipeline call (``batch_key``: everything but the
prompt, negative prompt, class, seed and image count) and the parameters written into its PNGs.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from genrt import validate
from genrt.errors import InputError
from genrt.families import family as lookup_family
from genrt.serve.limits import Limits
from genrt.typedjson import from_json

@dataclass(frozen=True)
class GenerationRequest:
    """One generation request; None means the model's default (from its manifest)."""

    prompt: str | None = None  # text prompt (ldm, imagen)
    negative_prompt: str | None = None  # what to steer away from (ldm, imagen)
    num_inference_steps: int | None = None  # denoising steps (ldm, imagen)
    guidance_scale: float | None = None  # classifier-free guidance scale (ldm, imagen)
    seed: int | None = None  # seed of the noise; None: the server draws one and returns it
    height: int | None = None  # image height in pixels (ldm)
    width: int | None = None  # image width in pixels (ldm)
    num_images_per_prompt: int = 1  # images generated from this prompt and seed
    sampler: str | None = None  # must be the server's sampler when given (ldm, imagen)
    class_id: int | None = None  # class label of a class-conditional prior (vqgan)
    temperature: float | None = None  # softmax temperature of the prior (vqgan)
    top_k: int | None = None  # keep the k most likely codes (vqgan)
    top_p: float | None = None  # keep the top-p nucleus of codes (vqgan)

    @classmethod
    def from_json(cls, data: Any, where: str = "request") -> "GenerationRequest":
        """Parse a JSON object, refusing unknown keys and wrong types by name (one-line InputError)."""
        fix = "send the fields of the request schema (GET /openapi.json)"
        return from_json(cls, data, where, lambda message: InputError(message, fix=fix))

    @classmethod
    def from_text(cls, text: str | bytes, where: str = "request") -> "GenerationRequest":
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{where} is not valid JSON ({exc})", fix='send a JSON object such as {"prompt": "a cat"}')
        return cls.from_json(data, where)


@dataclass(frozen=True)
class Job:
    """A request with every value the pipeline call needs resolved."""

    prompt: str | None  # None for vqgan
    negative_prompt: str | None
    seed: int
    num_images: int
    class_id: int | None
    settings: tuple[tuple[str, Any], ...]  # shared by a batch: steps, guidance, size, sampler, ... (sorted by name)

    @property
    def batch_key(self) -> tuple:
        """Jobs with equal keys can go through one pipeline call."""
        return self.settings

    @property
    def guided(self) -> bool:
        """Classifier-free guidance doubles the U-Nets' batch (None: the model's default, which guides)."""
        guidance = dict(self.settings).get("guidance_scale", 1.0)
        return guidance is None or guidance != 1.0

    @property
    def rows(self) -> int:
        """Images (batch rows) this job adds to a pipeline call."""
        return self.num_images

    def parameters(self, manifest_sha256: str) -> dict[str, Any]:
        """The generation parameters as written into each PNG's text chunk and a batch's JSONL."""
        given = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "class_id": self.class_id}
        return {**{k: v for k, v in given.items() if v is not None}, **dict(self.settings), "seed": self.seed,
                "num_images": self.num_images, "manifest_sha256": manifest_sha256}


def make_job(request: GenerationRequest, family: str, defaults: dict[str, Any], limits: Limits) -> Job:
    """Check ``request`` against the model and the server's limits, and fill in ``defaults``.

    ``defaults``: the pipeline's own defaults by setting name (see ``genrt.serve.call.pipeline_defaults``).
    """
    images = validate.integer(request.num_images_per_prompt, "num_images_per_prompt", low=1, high=limits.max_images)
    given_seed = validate.seed(request.seed)
    seed = secrets.randbelow(2**31) if given_seed is None else given_seed
    spec = lookup_family(family)
    if not spec.prompted:
        return _vqgan_job(request, seed, images, defaults, limits)
    if not request.prompt or not request.prompt.strip():
        raise InputError(f"the {family} model needs a text prompt", fix='send {"prompt": "a photo of a cat"}')
    for name in ("prompt", "negative_prompt"):
        text = getattr(request, name)
        if text is not None and len(text) > limits.max_prompt_chars:
            raise InputError(f"{name} has {len(text)} characters", fix=f"send at most {limits.max_prompt_chars}")
    for name in ("class_id", "temperature", "top_k", "top_p"):
        if getattr(request, name) is not None:
            raise InputError(f"{name} applies to vqgan models, not {family}", fix=f"drop {name}")
    steps = defaults["num_inference_steps"] if request.num_inference_steps is None else request.num_inference_steps
    if steps is not None:
        steps = validate.integer(steps, "num_inference_steps", low=1, high=limits.max_steps)
    sampler = defaults["sampler"]
    if request.sampler is not None and request.sampler != sampler:
        raise InputError(f"sampler '{request.sampler}' is not the sampler this server runs ('{sampler}')",
                         fix=f"drop sampler, or start the server with --sampler {request.sampler}")
    guidance = defaults["guidance_scale"] if request.guidance_scale is None else request.guidance_scale
    guidance = None if guidance is None else validate.guidance(guidance)
    settings = {"num_inference_steps": steps, "guidance_scale": guidance, "sampler": sampler}
    if spec.free_size:
        for side in ("height", "width"):
            given = getattr(request, side)
            settings[side] = limits.check_size(side, defaults[side] if given is None else given)
    elif request.height is not None or request.width is not None:
        raise InputError(f"the {family} cascade has fixed stage resolutions", fix="drop height and width")
    job = Job(prompt=request.prompt, negative_prompt=request.negative_prompt, seed=seed, num_images=images,
              class_id=None, settings=tuple(sorted(settings.items())))
    _check_batch(job, limits)
    return job


def _vqgan_job(request: GenerationRequest, seed: int, images: int, defaults: dict[str, Any], limits: Limits) -> Job:
    for name in ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "height", "width", "sampler"):
        if getattr(request, name) is not None:
            raise InputError(f"{name} does not apply to a vqgan model", fix=f"drop {name}; send class_id")
    if request.class_id is not None:
        validate.integer(request.class_id, "class_id", low=0, high=limits.classes - 1)
    settings = {name: defaults[name] if getattr(request, name) is None else getattr(request, name)
                for name in ("temperature", "top_k", "top_p")}
    job = Job(prompt=None, negative_prompt=None, seed=seed, num_images=images, class_id=request.class_id,
              settings=tuple(sorted(settings.items())))
    _check_batch(job, limits)
    return job


def _check_batch(job: Job, limits: Limits) -> None:
    if job.rows > limits.max_rows(job.guided):
        raise InputError(f"num_images_per_prompt {job.rows} exceeds the engines' batch of "
                         f"{limits.max_rows(job.guided)}{' under guidance' if job.guided else ''}",
                         fix="ask for fewer images")
