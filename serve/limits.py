"""How much one request and one pipeline call may ask for: the server's limits intersected with the
engines' profiles (batch rows, image size) read from the manifest."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

from genrt import validate

@dataclass(frozen=True)
class Limits:
    """Request limits; sizes are in pixels, batches in images (rows of a pipeline call)."""

    max_batch: int  # most rows in one pipeline call (server setting, already capped by the profile)
    profile_batch: int  # largest batch every component's profile accepts (guidance doubles the rows)
    max_images: int  # most images one request may ask for
    max_prompt_chars: int  # longest prompt / negative prompt, in characters
    max_steps: int  # most denoising steps of one request
    size_range: tuple[int, int] | None  # smallest and largest ldm image side; None: the family has fixed sizes
    size_step: int  # ldm image sides are multiples of this
    classes: int  # condition ids of a vqgan prior (1: the start token only)

    def max_rows(self, guided: bool) -> int:
        """Most images of one call: the guided U-Nets see [uncond; cond], twice the rows."""
        return max(1, min(self.max_batch, self.profile_batch // (2 if guided else 1)))

    def check_size(self, name: str, size: int) -> int:
        """``size`` pixels along ``name`` ("height" or "width"): a multiple of ``size_step`` within the range."""
        return validate.multiple(size, name, self.size_step, *self.size_range)


def limits_for(manifest: Any, defaults: dict[str, Any], max_batch: int, max_images: int, max_prompt_chars: int,
               max_steps: int) -> Limits:
    """The limits of the engines of ``manifest`` (a pipeline's manifest) combined with the server's own;
    ``defaults``: the pipeline's (``genrt.serve.call.pipeline_defaults``: max_steps, size range and step, classes)."""
    profile_batch = _profile_batch(manifest)
    return Limits(max_batch=min(max_batch, profile_batch), profile_batch=profile_batch, max_images=max_images,
                  max_prompt_chars=max_prompt_chars, max_steps=min(max_steps, defaults["max_steps"] or max_steps),
                  size_range=defaults["size_range"], size_step=defaults["size_step"], classes=defaults["classes"])


def _profile_batch(manifest: Any) -> int:
    """The smallest profile maximum of the batch axis ("B") over every component input (1 without profiles)."""
    limits = []
    for component in manifest.components.values():
        for tensor in component.inputs:
            if "B" not in tensor.shape:
                continue
            axis = tensor.shape.index("B")
            shape_range = component.profile.get(tensor.name)
            if shape_range is not None:
                limits.append(shape_range.max[axis])
    return min(limits) if limits else 1
