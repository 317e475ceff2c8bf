"""Export of DeepFloyd IF (diffusers pipeline folders) as a two-stage imagen cascade.

``genrt export imagen --checkpoint IF_I_DIR [--checkpoint-sr IF_II_DIR] --out DIR`` where each folder
is what ``IFPipeline`` / ``IFSuperResolutionPipeline.save_pretrained`` writes (``model_index.json``,
``unet/``, ``scheduler/``; stage I also ``text_encoder/`` and ``tokenizer/``). Components, with the
I/O of docs/contracts.md:

- ``t5_encoder``: stage I's ``text_encoder/`` (transformers T5EncoderModel), prompts of up to 77 tokens,
  its outputs at padding positions kept (not zeroed), as ``IFPipeline.encode_prompt`` gives them;
- ``base_unet``: stage I's U-Net (64x64, 6 output channels: epsilon and the learned variance range);
- ``sr_unet_256``: stage II's U-Net (256x256); the contract's ``low_res`` is concatenated to the sample
  and ``noise_level`` is the U-Net's ``class_labels``.
The U-Nets have no ``text_mask`` input: diffusers' IF pipelines let them attend to every text position.
The exported tokenizer.json lower-cases and strips prompts first (:class:`IFTokenizerSource`).

The manifest's ``settings`` carry each stage's scheduler (``scheduler/scheduler_config.json``:
``squaredcos_cap_v2`` -> our ``cosine``, ``learned_range`` variance) and IF's dynamic thresholding
(``dynamic_thresholding_ratio`` -> ``threshold_percentile``, ``sample_max_value`` -> ``threshold_max``),
with the IF pipelines' defaults: guidance 7 and 4, 100 and 50 DDPM steps, augmentation level 250. A folder
may give its own guidance and steps in ``model_index.json`` under ``"_genrt_defaults"``
(``{"guidance_scale": 4.0, "num_inference_steps": 25}``; diffusers' loaders skip keys that start with "_"),
as genrt's shipped demo cascade does (models/imagen-shapes: tiny U-Nets trained for short schedules).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from genrt.errors import CheckpointError, InputError
from genrt.export.folder import FamilyExport
from genrt.export.imagen_specs import FAMILY, base_unet_spec, sr_unet_spec, t5_spec, text_symbols
from genrt.export.options import ExportOptions
from genrt.export.tokenizer import TOKENIZER_FILE, TokenizerSource
from genrt.sdk.imagen.config import IFUNetConfig
from genrt.settings import ImagenSettings, ImagenStageSettings

# Tokens per prompt of IF's T5 (IFPipeline.encode_prompt: max_length 77).
MAX_LENGTH = 77
# The noised sample the IF U-Nets denoise has 3 channels (stage II concatenates 3 more of low_res).
IMAGE_CHANNELS = 3
# Defaults of IFPipeline / IFSuperResolutionPipeline.__call__: (guidance scale, DDPM steps) per stage.
STAGE_DEFAULTS = {"base_unet": (7.0, 100), "sr_unet_256": (4.0, 50)}
# model_index.json key of a folder's own (guidance scale, DDPM steps); diffusers ignores keys starting with "_".
DEFAULTS_KEY = "_genrt_defaults"
# IFSuperResolutionPipeline's default augmentation level of the upsampled stage I image.
SR_NOISE_LEVEL = 250
# Scheduler fields that must agree between stage II's scheduler and its image_noising_scheduler
# (the runtime noises the low-res image with the stage's own schedule).
NOISING_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end")
FIX_FOLDERS = "pass the DeepFloyd IF stage I folder as --checkpoint and the stage II folder as --checkpoint-sr"


@dataclass(frozen=True)
class IFStage:
    """One IF pipeline folder, checked: its U-Net config, sampling schedule and x_0 thresholding."""

    folder: Path  # the pipeline folder (model_index.json, unet/, scheduler/, ...)
    unet: IFUNetConfig  # from unet/config.json
    scheduler: dict  # ScheduleConfig fields from scheduler/scheduler_config.json
    threshold: tuple[float, float]  # (percentile, max value) of the dynamic thresholding of x_0
    defaults: tuple[float, int] | None  # (guidance scale, DDPM steps) of model_index.json's DEFAULTS_KEY, if any


@dataclass(frozen=True)
class IFTokenizerSource(TokenizerSource):
    """IF's T5 tokenizer with the prompt preprocessing of diffusers' IF pipelines in front of its normalizer:
    ``text.lower().strip()`` (their ``clean_caption=False`` path; caption cleaning needs bs4 and ftfy), so the
    runtime tokenizes as IFPipeline does. tokenizers' Lowercase / Strip follow Rust's Unicode rules, which
    agree with Python's ``str.lower`` / ``str.strip`` except for a few control characters."""

    def write_into(self, destination: Path) -> int | None:
        from tokenizers import Tokenizer, normalizers

        pad_id = super().write_into(destination)
        tokenizer = Tokenizer.from_file(str(destination / TOKENIZER_FILE))
        own = [tokenizer.normalizer] if tokenizer.normalizer is not None else []
        tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()] + own)
        tokenizer.save(str(destination / TOKENIZER_FILE))
        return pad_id


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path} not found", fix=f"pass a DeepFloyd IF diffusers folder that has {what}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc})", fix="save the pipeline again") from None


def schedule_from_diffusers(config: dict, source: str) -> dict:
    """ScheduleConfig fields of a diffusers DDPMScheduler config, as ``DDPMScheduler.from_config`` reads it
    (genrt.sampling.SchedulerConfig; a field genrt does not implement is refused by name)."""
    from genrt.sampling import SchedulerConfig

    return dataclasses.asdict(SchedulerConfig.from_dict(config, source).resolve("ddpm").schedule)


def threshold_from_diffusers(config: dict, source: str) -> tuple[float, float]:
    """(percentile, max) of the x_0 thresholding of a DDPMScheduler config; clipping alone is max 1 (s = 1)."""
    if config.get("thresholding", False):
        threshold = (float(config.get("dynamic_thresholding_ratio", 0.995)), float(config.get("sample_max_value", 1.0)))
    elif config.get("clip_sample", True) and float(config.get("clip_sample_range", 1.0)) == 1.0:
        threshold = (1.0, 1.0)
    else:
        raise CheckpointError(f"{source}: neither thresholding nor clip_sample with range 1 is set",
                              fix="the runtime's samplers always threshold x_0; set thresholding as IF does")
    return threshold


def read_defaults(index: dict, source: Path) -> tuple[float, int] | None:
    """(guidance scale, steps) of ``index[DEFAULTS_KEY]``, or None when the folder has none."""
    if DEFAULTS_KEY not in index:
        return None
    value = index[DEFAULTS_KEY]
    fix = f'write "{DEFAULTS_KEY}": {{"guidance_scale": 4.0, "num_inference_steps": 25}}, or remove it'
    if not isinstance(value, dict) or set(value) != {"guidance_scale", "num_inference_steps"}:
        raise CheckpointError(f"{source}: {DEFAULTS_KEY} is {value!r}", fix=fix)
    scale, steps = value["guidance_scale"], value["num_inference_steps"]
    if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0 or isinstance(steps, bool)
            or not isinstance(steps, int) or steps < 1):
        raise CheckpointError(f"{source}: {DEFAULTS_KEY} holds guidance_scale {scale!r}, num_inference_steps {steps!r}",
                              fix="guidance_scale is a number >= 0 and num_inference_steps an integer >= 1; " + fix)
    return float(scale), steps


def read_stage(folder: Path, stage_two: bool) -> IFStage:
    """Check that ``folder`` is a DeepFloyd IF pipeline folder of stage I (or II when ``stage_two``)."""
    from genrt.sdk.imagen.checkpoint import if_unet_config_from_diffusers

    option = "--checkpoint-sr" if stage_two else "--checkpoint"
    if not folder.is_dir() or not (folder / "model_index.json").is_file():
        raise InputError(f"{option} {folder} is not a diffusers pipeline folder (no model_index.json)", fix=FIX_FOLDERS)
    defaults = read_defaults(_read_json(folder / "model_index.json", "model_index.json"), folder / "model_index.json")
    unet_config = _read_json(folder / "unet" / "config.json", "unet/config.json")
    try:
        unet = if_unet_config_from_diffusers(unet_config, source=str(folder / "unet" / "config.json"))
    except CheckpointError as exc:
        raise InputError(f"{option} {folder} is not a DeepFloyd IF pipeline: {exc.message}", fix=FIX_FOLDERS) from None
    if unet.noise_level_conditioning != stage_two:
        found, wanted = ("II", "I") if unet.noise_level_conditioning else ("I", "II")
        raise InputError(f"{option} {folder} holds a DeepFloyd IF stage {found} U-Net, {option} takes stage {wanted}",
                         fix=FIX_FOLDERS)
    if unet.in_channels != (2 if stage_two else 1) * IMAGE_CHANNELS or unet.out_channels not in (3, 6):
        raise InputError(f"{option} {folder}: U-Net with {unet.in_channels} -> {unet.out_channels} channels",
                         fix="IF U-Nets take 3 (stage I) or 6 (stage II) channels and give 6")
    path = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json(path, "scheduler/scheduler_config.json")
    scheduler = schedule_from_diffusers(scheduler_config, str(path))
    # A 6-channel U-Net's variance output goes unused under a fixed variance (diffusers' IF pipelines drop it)
    if scheduler["variance_type"] == "learned_range" and unet.out_channels != 2 * IMAGE_CHANNELS:
        raise CheckpointError(f"{path}: variance_type learned_range with a {unet.out_channels}-channel U-Net",
                              fix="learned_range needs a U-Net with 6 output channels (eps and the variance)")
    noising = folder / "image_noising_scheduler" / "scheduler_config.json"
    if stage_two and noising.is_file():
        augmentation = schedule_from_diffusers(_read_json(noising, "image_noising_scheduler/"), str(noising))
        differing = [f for f in NOISING_FIELDS if augmentation[f] != scheduler[f]]
        if differing:
            raise CheckpointError(f"{noising} differs from the stage's scheduler in {', '.join(differing)}",
                                  fix="the runtime noises the low-res image with the stage's own schedule")
    return IFStage(folder, unet, scheduler, threshold_from_diffusers(scheduler_config, str(path)), defaults)


def _text_encoder_config(folder: Path) -> dict:
    config = _read_json(folder / "text_encoder" / "config.json", "text_encoder/config.json")
    if "d_model" not in config or "vocab_size" not in config:
        raise InputError(f"{folder / 'text_encoder'} is not a T5 encoder (no d_model / vocab_size)",
                         fix="pass the stage I folder, whose text_encoder/ holds IF's T5 encoder")
    return config


def if_settings(stages: dict[str, IFStage]) -> ImagenSettings:
    """The manifest's ``settings``: per-stage resolution, guidance, schedule and steps (the folder's, else IF's
    pipeline defaults); IF's thresholding."""
    thresholds = {stage.threshold for stage in stages.values()}
    if len(thresholds) != 1:
        raise CheckpointError(f"the stages threshold x_0 differently: {sorted(thresholds)}",
                              fix="the runtime applies one thresholding to every stage; align the scheduler configs")
    (percentile, max_value), = thresholds
    return ImagenSettings(
        stages=tuple(
            ImagenStageSettings(component=name, resolution=stage.unet.sample_size, guidance_scale=guidance,
                                scheduler=stage.scheduler, num_steps=steps)
            for name, stage in stages.items()
            for guidance, steps in [stage.defaults or STAGE_DEFAULTS[name]]
        ),
        sr_noise_level=SR_NOISE_LEVEL,
        threshold_percentile=percentile,
        threshold_max=max_value,
        max_length=MAX_LENGTH,
        sampler="ddpm",
    )


def plan(precision: str, options: ExportOptions) -> FamilyExport:
    """The IF components of ``options.checkpoint`` (stage I) and ``options.checkpoint_sr`` (stage II, optional)."""
    if options.resolution is not None:
        raise InputError("DeepFloyd IF runs at the fixed resolutions of its U-Nets; --resolution does not apply",
                         fix="drop --resolution")
    first = Path(options.checkpoint)
    stages = {"base_unet": read_stage(first, stage_two=False)}
    if options.checkpoint_sr is not None:
        stages["sr_unet_256"] = read_stage(Path(options.checkpoint_sr), stage_two=True)
    text = _text_encoder_config(first)
    width, vocab_size = int(text["d_model"]), int(text["vocab_size"])
    for name, stage in stages.items():
        if stage.unet.encoder_hid_dim != width:
            raise InputError(f"{stage.folder}: the {name} U-Net reads {stage.unet.encoder_hid_dim}-wide text "
                             f"embeddings, {first / 'text_encoder'} gives {width}", fix=FIX_FOLDERS)
    tokenizer = Path(options.tokenizer) if options.tokenizer is not None else first / "tokenizer"
    if not tokenizer.is_dir():
        raise InputError(f"{first} has no tokenizer/ folder", fix="pass --tokenizer with IF's T5 tokenizer folder")

    @functools.cache
    def encoder():
        from genrt.sdk.imagen.text_encoder import T5TextEncoder

        # IFPipeline.encode_prompt keeps T5's outputs at padding positions (its U-Nets attend to them)
        return T5TextEncoder.from_folder(first / "text_encoder", max_length=MAX_LENGTH,
                                         zero_padding=False).float().eval()

    @functools.cache
    def unet(name: str):
        from genrt.sdk.imagen.checkpoint import load_if_unet

        return load_if_unet(stages[name].folder / "unet").float().requires_grad_(False)

    symbols = text_symbols(options, MAX_LENGTH)
    base = stages["base_unet"].unet
    specs = [
        t5_spec(encoder, vocab_size, width, precision, symbols),
        base_unet_spec(lambda: unet("base_unet"), IMAGE_CHANNELS, base.out_channels, base.sample_size, width,
                       precision, symbols, masked=False),
    ]
    if "sr_unet_256" in stages:
        sr = stages["sr_unet_256"].unet
        stride = 2 ** (len(sr.block_out_channels) - 1)
        specs.append(sr_unet_spec("sr_unet_256", lambda: unet("sr_unet_256"), IMAGE_CHANNELS, sr.out_channels,
                                  sr.sample_size, stride, width, precision, symbols, masked=False))
    return FamilyExport(
        family=FAMILY,
        config=f"deepfloyd-if-{first.name}",
        precision=precision,
        components={spec.name: spec for spec in specs},
        settings=if_settings(stages),
        tokenizer=IFTokenizerSource(folder=tokenizer),
        text_component="t5_encoder",
        options=options.record(),
    )
