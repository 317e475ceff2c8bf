"""Does an image show what its shapes caption asked for? A torch-free scorer for runtime outputs.

The scorer reads an (H, W, 3) uint8 image as the dataset draws it (:mod:`genrt.sdk.data.shapes`):
1. background: the median of the border pixels, named by the nearest background colour;
2. foreground: the largest 4-connected region of pixels far from the background (more than half the
   smallest colour-to-background distance of the vocabulary), its median named by the nearest colour;
3. shape: from the fill ratio of the shape's bounding box, measured with soft (antialiased) coverage
   so that a few edge pixels do not bias small shapes: square ~1.0, circle ~pi/4, triangle ~0.5.
An image *adheres* to a caption when colour, shape and background all match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from genrt.errors import InputError
from genrt.shapes import BACKGROUNDS, COLOURS, Scene, parse_caption

# Fill-ratio boundaries halfway between the ideal shapes: triangle 0.5 | circle 0.785 | square 1.0.
_TRIANGLE_BELOW = (0.5 + np.pi / 4) / 2
_SQUARE_ABOVE = (np.pi / 4 + 1.0) / 2


def _nearest(table: dict[str, tuple[int, int, int]], rgb: np.ndarray) -> str:
    names = list(table)
    distances = np.linalg.norm(np.asarray([table[n] for n in names], np.float32) - rgb, axis=1)
    return names[int(np.argmin(distances))]


def _foreground_threshold() -> float:
    """Half the smallest distance between a colour and a background: edge pixels count as half."""
    pairs = [np.subtract(c, b) for c in COLOURS.values() for b in BACKGROUNDS.values()]
    return 0.5 * float(min(np.linalg.norm(p) for p in pairs))


_FAR_FROM_BACKGROUND = _foreground_threshold()


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a (H, W) bool mask, as a mask of the same shape (flood fill)."""
    height, width = mask.shape
    todo = set(np.flatnonzero(mask).tolist())  # flat indices y * width + x not yet in a region
    best: list[int] = []
    while todo:
        stack = [todo.pop()]
        region = []
        while stack:
            index = stack.pop()
            region.append(index)
            y, x = divmod(index, width)
            for neighbour, inside in ((index - width, y > 0), (index + width, y < height - 1),
                                      (index - 1, x > 0), (index + 1, x < width - 1)):
                if inside and neighbour in todo:
                    todo.remove(neighbour)
                    stack.append(neighbour)
        if len(region) > len(best):
            best = region
    largest = np.zeros(height * width, bool)
    largest[best] = True
    return largest.reshape(height, width)


def fill_ratio(pixels: np.ndarray, region: np.ndarray, background: np.ndarray, foreground: np.ndarray) -> float:
    """Soft area / soft bounding box of ``region`` in (H, W, 3) float ``pixels``.

    Coverage alpha in [0, 1] is each pixel's position between the background and foreground colours;
    the box's width is the sum over columns of their largest coverage (height likewise), so a shape
    edge that covers a third of a pixel adds a third of a pixel.
    """
    ys, xs = np.nonzero(region)
    top, bottom = max(ys.min() - 1, 0), ys.max() + 2
    left, right = max(xs.min() - 1, 0), xs.max() + 2
    window = pixels[top:bottom, left:right] - background  # (h, w, 3)
    axis = foreground - background
    alpha = np.clip(window @ axis / float(axis @ axis), 0.0, 1.0)  # (h, w)
    width, height = alpha.max(axis=0).sum(), alpha.max(axis=1).sum()
    return float(alpha.sum() / max(width * height, 1e-6))


def describe(image: np.ndarray) -> Scene | None:
    """What an (H, W, 3) uint8 image shows, or None when no foreground stands out of the background."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 4 or image.shape[1] < 4:
        raise InputError(f"image of shape {image.shape} is not (H, W, 3)", fix="pass one RGB image as (H, W, 3) uint8")
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    far = np.linalg.norm(pixels - background, axis=2) > _FAR_FROM_BACKGROUND
    if not far.any():
        return None
    region = _largest_region(far)
    foreground = np.median(pixels[region], axis=0)
    ratio = fill_ratio(pixels, region, background, foreground)
    shape = "triangle" if ratio < _TRIANGLE_BELOW else "circle" if ratio < _SQUARE_ABOVE else "square"
    return Scene(colour=_nearest(COLOURS, foreground), shape=shape, background=_nearest(BACKGROUNDS, background))


def adheres(image: np.ndarray, caption: str) -> bool:
    """True when the image's colour, shape and background all match the caption."""
    return describe(image) == parse_caption(caption)


@dataclass(frozen=True)
class AdherenceScore:
    """How many images matched their captions, in all and per fact."""

    total: int
    adherent: int
    colour: int
    shape: int
    background: int

    @property
    def rate(self) -> float:
        return self.adherent / self.total if self.total else 0.0


def score(images: Iterable[np.ndarray], captions: Sequence[str]) -> AdherenceScore:
    """Score images against their captions (same order, same count)."""
    counts = dict(total=0, adherent=0, colour=0, shape=0, background=0)
    images = list(images)
    if len(images) != len(captions):
        raise InputError(f"{len(images)} images for {len(captions)} captions", fix="pass one caption per image")
    for image, caption in zip(images, captions):
        wanted, seen = parse_caption(caption), describe(image)
        counts["total"] += 1
        if seen is None:
            continue
        counts["adherent"] += seen == wanted
        counts["colour"] += seen.colour == wanted.colour
        counts["shape"] += seen.shape == wanted.shape
        counts["background"] += seen.background == wanted.background
    return AdherenceScore(**counts)
