"""The vocabulary of the procedural shapes world: colours, shapes, backgrounds and their captions.

One owner for the names and RGB values that the dataset draws (``genrt.sdk.data.shapes``) and the
torch-free adherence scorer checks (``genrt.adherence``). A caption reads
``a {colour} {shape} on a {background} background``; there are 6 x 3 x 2 = 36 of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genrt.errors import InputError

# Foreground colours (RGB, 0-255).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
# Shapes, drawn inside a square bounding box: the circle fills it, the square is axis-aligned and the
# triangle is upright with its apex at the top middle of the box.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Plain backgrounds (RGB).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}

_CAPTION = re.compile(r"a (?P<colour>\w+) (?P<shape>\w+) on a (?P<background>\w+) background")


@dataclass(frozen=True)
class Scene:
    """What one image shows: the three facts a caption names."""

    colour: str
    shape: str
    background: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


def all_scenes() -> tuple[Scene, ...]:
    """The 36 scenes in a fixed order: colour, then shape, then background."""
    return tuple(Scene(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS)


def all_captions() -> tuple[str, ...]:
    return tuple(scene.caption for scene in all_scenes())


def parse_caption(caption: str) -> Scene:
    """``"a red circle on a white background"`` -> ``Scene("red", "circle", "white")``."""
    match = _CAPTION.fullmatch(caption.strip()) if isinstance(caption, str) else None
    scene = Scene(**match.groupdict()) if match else None
    if scene is None or scene.colour not in COLOURS or scene.shape not in SHAPES or scene.background not in BACKGROUNDS:
        raise InputError(
            f"caption {caption!r} is not one of the 36 shapes captions",
            fix="use 'a {colour} {shape} on a {background} background' with colour in "
            f"{', '.join(COLOURS)}, shape in {', '.join(SHAPES)}, background in {', '.join(BACKGROUNDS)}",
        )
    return scene
