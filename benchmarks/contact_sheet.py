"""A captioned contact sheet: images in a grid, each under its prompt, below a title line (PIL only).

Layout (pixels): a ``TITLE``-high title band, then rows of cells ``CELL`` wide; a cell is the caption
(``LINE`` per wrapped line, as many lines as the longest caption needs, plus ``GAP``) above the image scaled
to ``CELL`` x ``CELL`` (nearest neighbour, so a 64 px image shows its pixels). With ``verdicts`` each image
gets a ``FRAME``-wide frame, green where the scorer found the caption's scene and red where it did not.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genrt.errors import InputError
from genrt.fileio import atomic_path

CELL = 128  # pixels per image side on the sheet
LINE = 12  # pixels per caption line (PIL's default bitmap font is 11 high, 6 wide)
CHARS = 20  # caption characters per line: 20 x 6 px fit a 128 px cell with margins
GAP = 4  # pixels between a caption and its image
TITLE = 20  # pixels of the title band
FRAME = 3  # pixels of a verdict frame
MARGIN = 4  # pixels between a cell's left edge and its caption text
ADHERES, MISSES = (40, 170, 60), (220, 40, 40)  # verdict frame colours


def caption_height(captions: Sequence[str]) -> int:
    """Pixels above each image: the longest caption's wrapped lines plus the gap."""
    return LINE * max(len(textwrap.wrap(c, CHARS)) for c in captions) + GAP


def image_box(index: int, columns: int, captions: Sequence[str]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of image ``index`` on the sheet (right/bottom exclusive)."""
    left = (index % columns) * CELL
    top = TITLE + (index // columns) * (CELL + caption_height(captions)) + caption_height(captions)
    return left, top, left + CELL, top + CELL


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 6,
                  verdicts: Sequence[bool] | None = None) -> Image.Image:
    """(H, W, 3) uint8 images with one caption each -> one RGB sheet, ``columns`` images per row, white ground."""
    if len(images) != len(captions) or len(images) == 0:
        raise InputError(f"{len(images)} images for {len(captions)} captions", fix="pass one caption per image")
    if verdicts is not None and len(verdicts) != len(images):
        raise InputError(f"{len(verdicts)} verdicts for {len(images)} images", fix="pass one verdict per image")
    font = ImageFont.load_default()
    rows = -(-len(images) // columns)
    text_height = caption_height(captions)
    sheet = Image.new("RGB", (columns * CELL, TITLE + rows * (CELL + text_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, 4), title, fill=(0, 0, 0), font=font)
    for index, (image, caption) in enumerate(zip(images, captions)):
        left, top, right, bottom = image_box(index, columns, captions)
        for number, line in enumerate(textwrap.wrap(caption, CHARS)):
            draw.text((left + MARGIN, top - text_height + number * LINE), line, fill=(0, 0, 0), font=font)
        sheet.paste(Image.fromarray(np.asarray(image, np.uint8)).resize((CELL, CELL), Image.NEAREST), (left, top))
        if verdicts is not None:
            draw.rectangle([left, top, right - 1, bottom - 1], outline=ADHERES if verdicts[index] else MISSES,
                           width=FRAME)
    return sheet


def write_png(image: Image.Image, path: str | Path) -> Path:
    """Save ``image`` as a PNG atomically (no half-written file on a crash); PNG's best compression."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path
