"""A procedural dataset: one coloured shape on a plain background, with its caption.

Deterministic by (seed, index) and unlimited. Each image is (H, W, 3) uint8, H = W = ``resolution``
(64 by default); the shape's square bounding box is 40-70% of the side, placed at a random position
fully inside the image. Edges are antialiased by drawing at ``SUPERSAMPLE`` times the resolution and
averaging down. The names and colours come from :mod:`genrt.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from genrt.shapes import BACKGROUNDS, COLOURS, SHAPES, Scene

SUPERSAMPLE = 4  # drawing scale for antialiased edges
BOX_FRACTION = (0.4, 0.7)  # bounding-box side as a fraction of the image side


@dataclass(frozen=True)
class ShapeSample:
    """One dataset item: the image, what it shows, and where the shape's box lies (in pixels)."""

    image: np.ndarray  # (H, W, 3) uint8
    scene: Scene
    box: tuple[float, float, float]  # (left, top, side)

    @property
    def caption(self) -> str:
        return self.scene.caption


def render(scene: Scene, box: tuple[float, float, float], resolution: int = 64) -> np.ndarray:
    """Draw ``scene`` with its shape in the square ``box`` = (left, top, side) -> (H, W, 3) uint8."""
    scale = resolution * SUPERSAMPLE
    canvas = Image.new("RGB", (scale, scale), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    left, top, side = (value * SUPERSAMPLE for value in box)
    right, bottom = left + side, top + side
    colour = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=colour)
    elif scene.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=colour)
    else:  # triangle: upright, apex at the top middle of the box
        draw.polygon(((left + side / 2, top), (left, bottom), (right, bottom)), fill=colour)
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels = pixels.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


class ShapesDataset:
    """``dataset[i]`` is the same :class:`ShapeSample` for the same (seed, i), on any machine."""

    def __init__(self, seed: int = 0, resolution: int = 64, length: int = 1 << 31):
        self.seed = seed
        self.resolution = resolution
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> ShapeSample:
        rng = np.random.default_rng([self.seed, index])
        scene = Scene(
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            shape=SHAPES[rng.integers(len(SHAPES))],
            background=list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        )
        return self.draw(scene, rng)

    def draw(self, scene: Scene, rng: np.random.Generator) -> ShapeSample:
        """A random placement of ``scene`` (box size and position drawn from ``rng``)."""
        side = rng.uniform(*BOX_FRACTION) * self.resolution
        left, top = rng.uniform(0.0, self.resolution - side, size=2)
        box = (float(left), float(top), float(side))
        return ShapeSample(image=render(scene, box, self.resolution), scene=scene, box=box)
