"""VQGAN on exported components, without torch: sample code grids with the GPT prior, decode them;
encode and decode images.

Sampling (taming ``cond_transformer``): the condition prefix (B, n_cond) runs through ``prior``
with an empty key/value cache, then each image code costs one single-token ``prior`` call on the
cache it returned (``present_key_values`` (L, 2, B, heads, P+T, d) becomes the next
``past_key_values``). The last position's logits are divided by ``temperature``, cut to the top-k
codes and to the top-p nucleus, and a code is drawn from their softmax. The h*w codes, in raster
order, form the (B, h, w) grid that ``decoder`` turns into an image.

Noise order (one ``numpy.random.Generator(PCG64(seed))``, or the ``generator`` passed in): per code,
in raster order, one ``random((B,), dtype=float64)`` draw u; the code is the first id whose
cumulative probability exceeds u (inverse-CDF sampling over ids 0..V-1). ``top_k=1`` is greedy
and uses no randomness.

Where the cache lives: on the GPU backends (or with ``resident=True`` on the CPU) the prior's
``present_key_values`` stays a device tensor that is fed back as the next ``past_key_values``
(``genrt.runtime.loops.kv_cache``); per code only the ids (B, T) and the position (1,) go host -> device and
the logits (B, T, V) device -> host (the draw is numpy). The host loop (``resident=False``) copies the whole
cache both ways per code. Both give the same codes for the same noise.

Settings read: the manifest's :class:`~genrt.settings.VqganSettings` (condition prefix, sampling defaults).
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np

from genrt import validate
from genrt.errors import InputError
from genrt.manifest import Manifest, ManifestError
from genrt.runtime.loops.kv_cache import sample_codes
from genrt.runtime.pipelines.common import (GenerationResult, NoiseSource, Pipeline, RunnerOptions, StepEndCallback,
                                            Stopwatch, from_uint8, noise_source, step_end_hook, to_uint8)
from genrt.runtime.sampling_filters import sample_next
from genrt.settings import VqganSettings


class VQGANPipeline(Pipeline):
    """``pipe(condition, ...)`` samples images; ``encode`` / ``decode`` / ``reconstruct`` map between
    uint8 images (B, H, W, 3) and code grids (B, h, w). The prior is opened only when exported. ``resident``:
    keep the prior's key/value cache on the device while sampling (None: on the GPU backends; True also
    on ``onnxruntime-cpu``, where it runs the same device path in host memory)."""

    family = "vqgan"

    def __init__(self, manifest: Manifest, options: RunnerOptions = RunnerOptions()):
        names = [name for name in ("encoder", "decoder", "prior") if name in manifest.components]
        if "decoder" not in names:
            raise ManifestError(f"{manifest.root}: the vqgan export has no decoder",
                                fix="export again with `genrt export` including the decoder")
        super().__init__(manifest, names, options)
        settings: VqganSettings = manifest.settings
        self.n_condition_tokens = settings.n_condition_tokens
        self.codebook_size = settings.n_embed
        self.condition_vocab_size = settings.condition_vocab_size
        self.class_names = settings.class_names
        self.defaults = {"temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p}
        self.grid_range = manifest.component("decoder").profile.get("indices")
        self.default_grid = (self.grid_range.opt[1], self.grid_range.opt[2]) if self.grid_range else None
        if "prior" in names:
            past = manifest.component("prior").input("past_key_values")
            layers, heads, head_dim = past.shape[0], past.shape[3], past.shape[5]
            if not all(isinstance(dim, int) for dim in (layers, heads, head_dim)):
                raise ManifestError(f"{manifest.root}: prior past_key_values shape {past.shape} has symbolic "
                                    "layers/heads/head size", fix="export again with `genrt export`")
            self.cache_layout = (layers, heads, head_dim)
            past_range = manifest.component("prior").profile.get("past_key_values")
            self.max_past = past_range.max[4] if past_range else None

    # -- sampling -----------------------------------------------------------------------------------
    def callback_steps(self, num_inference_steps: int | None = None) -> int | None:
        """Codes of a call on the default grid, one ``callback_on_step_end`` each (None: the export has no default
        grid); a prior samples one code per step, so ``num_inference_steps`` does not apply."""
        return None if self.default_grid is None else self.default_grid[0] * self.default_grid[1]

    def __call__(self, condition: int | Sequence[int] | np.ndarray | None = None, *,
                 prompt: str | Sequence[str] | None = None, batch_size: int = 1,
                 grid: tuple[int, int] | None = None, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, generator: NoiseSource | None = None,
                 callback_on_step_end: StepEndCallback | None = None) -> GenerationResult:
        """Sample (B, h*f, w*f, 3) uint8 images. ``condition``: class ids (B,) or prefixes (B, n_cond);
        None uses condition id 0 (the SOS token) for ``batch_size`` images. ``prompt`` instead names the
        classes by the export's ``class_names`` (one str: ``batch_size`` images of it; a list: one image each).
        ``grid`` is (h, w) in codes.
        ``callback_on_step_end(pipe, step_index, step_index, {"codes": codes})`` after each code drawn, diffusers'
        convention with the code's index as its timestep and the codes so far (B, step_index + 1) int32."""
        self.check_open()
        if "prior" not in self.runners:
            raise InputError("this vqgan export has no prior, so it cannot sample",
                             fix="export again with `genrt export` including the prior, or use encode/decode")
        batch_size = validate.integer(batch_size, "batch_size", low=1)
        if prompt is not None:
            if condition is not None:
                raise InputError("both condition and prompt were given", fix="pass class ids or prompts, not both")
            condition = self._class_ids(prompt, batch_size)
        prefix = self._condition(condition, batch_size)
        temperature = validate.number(self.defaults["temperature"] if temperature is None else temperature,
                                      "temperature", low=0.0, low_open=True)
        top_k = self.defaults["top_k"] if top_k is None else top_k
        top_p = self.defaults["top_p"] if top_p is None else top_p
        vocab = self.manifest.component("prior").outputs[0].shape[2]
        if top_k is not None:
            top_k = validate.integer(top_k, "top_k", low=1, high=None if isinstance(vocab, str) else vocab)
        if top_p is not None:
            top_p = validate.number(top_p, "top_p", low=0.0, low_open=True, high=1.0)
        rows, cols = self._grid(grid)
        if self.max_past is not None and self.n_condition_tokens + rows * cols - 2 > self.max_past:
            raise InputError(f"a {rows}x{cols} grid needs {rows * cols} codes after {self.n_condition_tokens} "
                             f"condition tokens; the exported prior caches at most {self.max_past + 1} tokens",
                             fix="sample a smaller grid, or export the prior with a longer block")
        rng = noise_source(seed, generator)
        hook = step_end_hook(self, callback_on_step_end, key="codes")
        step_end = None if hook is None else (lambda index, codes: hook(index, index, codes))
        with self._lock:
            watch = Stopwatch()
            with watch.stage("prior"):
                codes = self._sample_codes(prefix, rows * cols, temperature, top_k, top_p, rng, step_end)
            with watch.stage("decoder"):
                decoded = self.run("decoder", indices=codes.reshape(len(prefix), rows, cols))["image"]
            return GenerationResult(images=to_uint8(decoded), timings=watch.finish(), seed=seed)

    def _sample_codes(self, prefix: np.ndarray, count: int, temperature: float, top_k: int | None,
                      top_p: float | None, rng: NoiseSource,
                      step_end: Callable[[int, np.ndarray], None] | None) -> np.ndarray:
        """prefix (B, n_cond) int32 -> codes (B, count) int32, one cached prior call per code
        (``genrt.runtime.loops.kv_cache``)."""

        def choose(logits: np.ndarray) -> np.ndarray:
            # temperature, top-k / top-p filtering, and a draw
            return sample_next(logits, temperature, top_k, top_p, rng)

        return sample_codes(self.runners["prior"], prefix, count, self.cache_layout, choose, self.resident, step_end)

    def _class_ids(self, prompt: str | Sequence[str], batch_size: int) -> list[int]:
        """Prompts -> their class ids: a str repeated ``batch_size`` times, or one id per listed prompt."""
        prompts = [prompt] * batch_size if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompt is {prompt!r}", fix="pass one class name or a non-empty list of them")
        if not self.class_names:
            raise InputError("this vqgan export names no classes, so it takes no prompt",
                             fix=f"pass class ids 0..{self.condition_vocab_size - 1} instead")
        unknown = next((p for p in prompts if p not in self.class_names), None)
        if unknown is not None:
            listing = ", ".join(repr(name) for name in self.class_names)
            raise InputError(f"prompt {unknown!r} is not one of this model's {len(self.class_names)} classes",
                             fix=f"use one of {listing}")
        return [self.class_names.index(p) for p in prompts]

    def _condition(self, condition, batch_size: int) -> np.ndarray:
        """Condition ids -> (B, n_cond) int32 prefix, validated against the condition vocabulary."""
        if condition is None:
            prefix = np.zeros((batch_size, self.n_condition_tokens), dtype=np.int64)
        else:
            prefix = np.asarray([condition] if np.isscalar(condition) else condition)
            if prefix.ndim == 1 and self.n_condition_tokens == 1:
                prefix = prefix[:, None]
        if prefix.ndim != 2 or prefix.shape[1] != self.n_condition_tokens or prefix.dtype.kind not in "iu":
            raise InputError(f"condition has shape {prefix.shape} and dtype {prefix.dtype}",
                             fix=f"pass integer class ids (B,) or prefixes (B, {self.n_condition_tokens})")
        if prefix.size and (prefix.min() < 0 or prefix.max() >= self.condition_vocab_size):
            raise InputError(f"condition ids span [{prefix.min()}, {prefix.max()}]",
                             fix=f"use ids in [0, {self.condition_vocab_size - 1}]")
        return prefix.astype(np.int32)

    def _grid(self, grid: tuple[int, int] | None) -> tuple[int, int]:
        if grid is None:
            if self.default_grid is None:
                raise InputError("the export has no grid-size profile for the decoder", fix="pass grid=(h, w)")
            return self.default_grid
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in grid)):
            raise InputError(f"grid is {grid!r}", fix="pass grid=(h, w): two ints >= 1, in codes")
        rows, cols = (int(v) for v in grid)
        allowed = self.grid_range
        inside = allowed is None or (allowed.min[1] <= rows <= allowed.max[1] and allowed.min[2] <= cols <= allowed.max[2])
        if not inside:
            raise InputError(f"grid {rows}x{cols} is outside the decoder's range "
                             f"{allowed.min[1]}x{allowed.min[2]} .. {allowed.max[1]}x{allowed.max[2]}",
                             fix="pick a grid inside the range, or export again with a wider --resolution")
        return rows, cols

    # -- autoencoder --------------------------------------------------------------------------------
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) or (H, W, 3) -> code grid (B, H/f, W/f) int32."""
        self.check_open()
        if "encoder" not in self.runners:
            raise InputError("this vqgan export has no encoder",
                             fix="export again with `genrt export` including the encoder")
        pixels = from_uint8(images, self.float_dtype)
        with self._lock:
            return self.run("encoder", image=pixels)["indices"].astype(np.int32, copy=False)

    def decode(self, indices: np.ndarray) -> GenerationResult:
        """Code grid (B, h, w) ints -> images (B, h*f, w*f, 3) uint8."""
        self.check_open()
        indices = np.asarray(indices)
        if indices.ndim != 3 or indices.dtype.kind not in "iu":
            raise InputError(f"indices have shape {indices.shape} and dtype {indices.dtype}",
                             fix="pass integer code grids of shape (B, h, w)")
        if indices.size and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise InputError(f"indices span [{indices.min()}, {indices.max()}]",
                             fix=f"pass codebook ids in [0, {self.codebook_size - 1}]")
        with self._lock:
            watch = Stopwatch()
            with watch.stage("decoder"):
                decoded = self.run("decoder", indices=indices.astype(np.int32))["image"]
            return GenerationResult(images=to_uint8(decoded), timings=watch.finish())

    def reconstruct(self, images: np.ndarray) -> GenerationResult:
        """Encode then decode uint8 images (B, H, W, 3)."""
        return self.decode(self.encode(images))
