"""What every runtime pipeline shares: opened runners, a call lock, stage timings and the result.

A pipeline owns the runners of its components (one :class:`~genrt.runtime.backends.Runners`) and
serialises calls with one lock: TensorRT engines of a pipeline share an activation block and the
order of their GPU work, so two calls must not interleave. Separate pipelines run in parallel.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from genrt import validate
from genrt.errors import InputError
from genrt.manifest import Manifest, ManifestError
from genrt.runtime.backends import BACKENDS, Runners
from genrt.runtime.backends.base import numpy_dtype
from genrt.runtime.backends.device import DeviceTensor
from genrt.runtime.backends.ort_options import OrtOptions
from genrt.runtime.tokenizer import PromptTokenizer
from genrt.settings import TokenizerSettings

# Export precisions the runtime runs (its host arrays are numpy's: float32 or float16 tensors; int8 graphs take
# and give float32).
RUNTIME_PRECISIONS = ("fp32", "fp16", "int8")
# diffusers' ``callback_on_step_end``: called after each denoising step as
# ``callback(pipe, step_index, timestep, {"latents": latents})`` (step_index from 0, the step's timestep, the latents
# after the step as a host float32 array). Its return value is ignored: unlike diffusers, genrt does not let the
# callback replace the latents. The CLI drives tqdm with it.
StepEndCallback = Callable[[object, int, object, dict], object]


class NoiseSource(Protocol):
    """Where a pipeline draws its randomness: a ``numpy.random.Generator`` or anything with the same
    two methods (a parity test passes an adapter that draws with a torch generator, so the runtime
    and the torch reference see the very same numbers)."""

    def standard_normal(self, size: tuple[int, ...], dtype=np.float64) -> np.ndarray: ...

    def random(self, size: tuple[int, ...], dtype=np.float64) -> np.ndarray: ...


def noise_source(seed: int | None, generator: NoiseSource | None) -> NoiseSource:
    """``generator`` when given, else ``numpy.random.Generator(PCG64(seed))`` (seed in 0 .. SEED_MAX)."""
    seed = validate.seed(seed)
    if generator is not None:
        if seed is not None:
            raise InputError("both seed and generator were given", fix="pass one of them")
        return generator
    return np.random.Generator(np.random.PCG64(seed))


def gaussian(rng: NoiseSource, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 standard-normal draw of ``shape`` from ``rng``."""
    return np.asarray(rng.standard_normal(tuple(shape), dtype=np.float32), dtype=np.float32)


def initial_noise(rng: NoiseSource, shape: tuple[int, ...], latents: np.ndarray | None) -> np.ndarray:
    """The initial noise of ``shape``: ``latents`` when given (diffusers' explicit initial noise; nothing is drawn
    for it, so passing the first draw of ``seed`` gives that seed's images), else a draw from ``rng``."""
    if latents is None:
        return gaussian(rng, shape)
    given = np.asarray(latents)
    if given.shape != tuple(shape) or given.dtype.kind != "f" or not np.isfinite(given).all():
        raise InputError(f"latents have shape {given.shape} and dtype {given.dtype}; expected finite floats of "
                         f"shape {tuple(shape)}",
                         fix=f"pass latents of shape {tuple(shape)} (batch = prompts x num_images_per_prompt), "
                             "or none to draw them from seed/generator")
    return given.astype(np.float32)


def step_end_hook(pipe: object, callback: StepEndCallback | None, key: str = "latents"
                  ) -> Callable[[int, object, np.ndarray], None] | None:
    """The loops' ``(step index, timestep, array)`` hook that calls ``callback(pipe, index, timestep, {key: array})``;
    None without a callback."""
    if callback is None:
        return None
    if not callable(callback):
        raise InputError(f"callback_on_step_end is {callback!r}; expected a callable",
                         fix="pass callback_on_step_end=lambda pipe, step_index, timestep, kwargs: kwargs")
    return lambda index, t, array: callback(pipe, index, t, {key: array})


def images_per_prompt(prompts: list[str], negatives: list[str], count: object) -> tuple[list[str], list[str]]:
    """Each prompt (and its negative prompt) repeated ``num_images_per_prompt`` times in a row, as diffusers
    batches them: [p0, p0, p1, p1] for 2. The batch's noise is one draw for all rows, so each image has its own
    noise, and ``pipe([p0, p0, p1, p1])`` with the same seed gives the same images."""
    count = validate.integer(count, "num_images_per_prompt", low=1)
    return ([p for p in prompts for _ in range(count)], [n for n in negatives for _ in range(count)])


@dataclass(frozen=True)
class GenerationResult:
    """Images of one call and where the time went."""

    images: np.ndarray  # (B, H, W, 3) uint8
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, plus "total"
    seed: int | None = None  # seed of the numpy Generator that drew every noise tensor

    def to_pil(self) -> list:
        """The images as ``PIL.Image.Image`` objects (RGB)."""
        from PIL import Image

        return [Image.fromarray(image, mode="RGB") for image in self.images]


class Stopwatch:
    """Accumulates wall-clock seconds per named stage."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def finish(self) -> dict[str, float]:
        return {**self.timings, "total": time.perf_counter() - self._start}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] -> (B, H, W, 3) uint8, rounding ``(x + 1) * 127.5``."""
    scaled = np.clip((images.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1)


def from_uint8(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(B, H, W, 3) or (H, W, 3) uint8 -> (B, 3, H, W) in [-1, 1] of ``dtype``."""
    given = np.asarray(images)
    images = given[None] if given.ndim == 3 else given
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"image has dtype {given.dtype} and shape {given.shape}",
                         fix="pass uint8 RGB pixels of shape (H, W, 3) or (B, H, W, 3), e.g. np.asarray(pil_image)")
    return (images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).astype(dtype)


def as_prompts(prompt: str | Sequence[str], name: str = "prompt") -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else []
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"{name} must be a string or a non-empty list of strings", fix=f"pass {name}='a photo of a cat'")
    return prompts


def prompts_and_negatives(prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None
                          ) -> tuple[list[str], list[str]]:
    """The prompts and one negative prompt per prompt ("" when none is given; one is repeated for all)."""
    prompts = as_prompts(prompt)
    negatives = [""] * len(prompts) if negative_prompt is None else as_prompts(negative_prompt, "negative_prompt")
    if len(negatives) == 1 and len(prompts) > 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts",
                         fix="pass one negative prompt, or one per prompt")
    return prompts, negatives


def prompt_tokenizer(manifest: Manifest, settings: TokenizerSettings | None, max_length: int) -> PromptTokenizer:
    """The export's prompt tokenizer, padding to ``max_length`` tokens; a ManifestError when it has none."""
    if settings is None:
        raise ManifestError(f"{manifest.root}: the {manifest.family} export has no tokenizer",
                            fix="export again with `genrt export` including the text encoder")
    return PromptTokenizer(manifest.path(settings.folder), max_length=max_length, pad_id=settings.pad_token_id)


# Backends whose runners keep tensors on a GPU: the sampling loops stay there unless resident=False
DEVICE_BACKENDS = ("onnxruntime-cuda", "tensorrt")


@dataclass(frozen=True)
class RunnerOptions:
    """Where and how a pipeline's runners run (the keywords of ``genrt.runtime.load``), checked by name here."""

    backend: str = "auto"  # one of BACKENDS ("auto": the fastest this machine runs, ``Runners``)
    device_id: int = 0  # the GPU of the CUDA backends
    threads: int = 0  # ONNX Runtime CPU intra-op threads (0: its default)
    # keep the sampling loop's state on the device (None: on DEVICE_BACKENDS, where it saves a host round trip per
    # step; True runs the device loops on any backend, the CPU included; TensorRT builds their step graphs first)
    resident: bool | None = None
    cuda_graphs: bool = True  # False: the GPU backends' calls run without CUDA graphs
    ort_options: OrtOptions = OrtOptions()  # ONNX Runtime session options: spinning, memory arena, optimisation

    def __post_init__(self):
        validate.choice(self.backend, "backend", BACKENDS)
        checked = {"device_id": validate.integer(self.device_id, "device_id", low=0),
                   "threads": validate.integer(self.threads, "threads", low=0, high=validate.THREADS_MAX),
                   "resident": validate.flag(self.resident, "resident", optional=True),
                   "cuda_graphs": validate.flag(self.cuda_graphs, "cuda_graphs")}
        for name, value in checked.items():  # numpy ints and bools become Python's
            object.__setattr__(self, name, value)
        if not isinstance(self.ort_options, OrtOptions):
            raise InputError(f"ort_options={self.ort_options!r} is not an OrtOptions",
                             fix="pass genrt.runtime.OrtOptions(spinning=..., memory_arena=..., optimization=...)")


class Pipeline:
    """Opens the runners of ``component_names`` as ``options`` say and closes them on ``close()`` / ``with`` exit."""

    family = ""

    def __init__(self, manifest: Manifest, component_names: Sequence[str], options: RunnerOptions = RunnerOptions()):
        if manifest.family != self.family:
            raise InputError(f"{manifest.root} holds a '{manifest.family}' export, not '{self.family}'",
                             fix="use genrt.runtime.load(DIR), which picks the family's pipeline")
        if manifest.precision not in RUNTIME_PRECISIONS:
            raise ManifestError(f"{manifest.root} is a {manifest.precision} export, which the torch-free runtime "
                                "cannot run (numpy has no bfloat16)",
                                fix="export with --precision fp16 or fp32 to run it; bf16 folders serve "
                                    "`genrt build` and `genrt parity` on a GPU")
        self.manifest = manifest
        self.runners = Runners(manifest, component_names, backend=options.backend, threads=options.threads,
                               device_id=options.device_id, cuda_graphs=options.cuda_graphs,
                               ort_options=options.ort_options)
        self.choice = self.runners.choice  # the backend, and why
        self.resident = self.choice.backend in DEVICE_BACKENDS if options.resident is None else options.resident
        self.resident_asked = options.resident is not None  # True/False given, not the backend's default
        self.backend = self.runners.backend
        self._lock = threading.Lock()
        self._closed = False

    def check_open(self) -> None:
        """Raise an InputError when the pipeline was closed (every public call starts with this)."""
        if self._closed:
            raise InputError(f"the {self.family} pipeline of {self.manifest.root} is closed",
                             fix="open it again with genrt.runtime.load(DIR), or call it inside its `with` block")

    @property
    def float_dtype(self) -> np.dtype:
        """numpy dtype of the float tensors of the export (float32 or float16)."""
        return np.dtype(np.float16 if self.manifest.precision == "fp16" else np.float32)

    def run(self, component: str, **feeds: np.ndarray | DeviceTensor) -> dict[str, np.ndarray]:
        """Run one component, casting each host feed to the manifest dtype (device tensors from ``upload`` go as
        they are); float outputs come back float32."""
        runner = self.runners[component]
        dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in runner.spec.inputs}
        cast = {name: value if isinstance(value, DeviceTensor) or name not in dtypes
                else np.asarray(value).astype(dtypes[name], copy=False) for name, value in feeds.items()}
        outputs = runner.infer(cast)
        return {name: value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value
                for name, value in outputs.items()}

    def upload(self, component: str, **feeds: np.ndarray) -> dict[str, DeviceTensor]:
        """Feeds that every step of a loop reads (text embeddings, conditioning), cast to the manifest dtype and
        copied to ``component``'s device once per call instead of once per step."""
        runner = self.runners[component]
        dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in runner.spec.inputs}
        return {name: runner.upload(np.asarray(value).astype(dtypes[name], copy=False)) for name, value in feeds.items()}

    def close(self) -> None:
        self._closed = True
        self.runners.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
