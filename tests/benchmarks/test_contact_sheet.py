"""The contact sheet: its size, where each image lands (scaled, unchanged), that captions and title are drawn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.contact_sheet import (ADHERES, CELL, FRAME, LINE, MISSES, TITLE, caption_height, contact_sheet,
                                      image_box, write_png)
from genrt.errors import InputError

CAPTIONS = ["a red circle on a white background", "a blue square on a black background", "a yellow triangle"]


def images(count: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def dark(region: np.ndarray) -> int:
    """Pixels of an (h, w, 3) uint8 region darker than mid grey (text on the white ground)."""
    return int((region.max(axis=2) < 128).sum())


def test_sheet_size_and_images_at_their_boxes_scaled_by_nearest_neighbour():
    pictures = images(3)
    sheet = np.asarray(contact_sheet(np.stack(pictures), CAPTIONS, "title", columns=2))  # (N, H, W, 3) as runs give
    text = caption_height(CAPTIONS)
    assert text == 2 * LINE + 4  # the longest caption wraps to two lines
    assert sheet.shape == (TITLE + 2 * (text + CELL), 2 * CELL, 3) and sheet.dtype == np.uint8
    assert image_box(2, 2, CAPTIONS) == (0, TITLE + CELL + 2 * text, CELL, TITLE + 2 * CELL + 2 * text)
    for index, picture in enumerate(pictures):
        left, top, right, bottom = image_box(index, 2, CAPTIONS)
        scaled = picture.repeat(2, axis=0).repeat(2, axis=1)  # 64 -> 128, nearest neighbour
        np.testing.assert_array_equal(sheet[top:bottom, left:right], scaled)
    assert (sheet[image_box(3, 2, CAPTIONS)[1]:, CELL:] == 255).all()  # the empty fourth cell stays white


def test_captions_are_drawn_above_their_images_one_line_band_each():
    sheet = np.asarray(contact_sheet(images(3), CAPTIONS, "the title", columns=3))
    assert dark(sheet[:TITLE, :CELL]) > 20  # the title
    for index, caption in enumerate(CAPTIONS):
        left, top, right, _ = image_box(index, 3, CAPTIONS)
        first, second = sheet[top - 2 * LINE - 4:top - LINE - 4, left:right], sheet[top - LINE - 4:top - 4, left:right]
        assert dark(first) > 20
        assert (dark(second) > 20) == (len(caption) > 20)  # "a yellow triangle" fits one line
    bands = [sheet[TITLE:TITLE + LINE, i * CELL:(i + 1) * CELL] for i in range(3)]
    assert not np.array_equal(bands[0], bands[1])  # different words, different pixels


def test_verdicts_frame_each_image_green_or_red():
    pictures = images(2, size=32)
    sheet = np.asarray(contact_sheet(pictures, CAPTIONS[:2], "t", verdicts=[True, False]))
    for index, colour in enumerate((ADHERES, MISSES)):
        left, top, right, bottom = image_box(index, 6, CAPTIONS[:2])
        assert tuple(sheet[top, left]) == colour and tuple(sheet[bottom - 1, right - 1]) == colour
        assert tuple(sheet[top + FRAME - 1, left + CELL // 2]) == colour
        inner = sheet[top + FRAME:bottom - FRAME, left + FRAME:right - FRAME]
        np.testing.assert_array_equal(inner, pictures[index].repeat(4, 0).repeat(4, 1)[FRAME:-FRAME, FRAME:-FRAME])


def test_mismatched_counts_are_refused():
    with pytest.raises(InputError, match="2 images for 3 captions"):
        contact_sheet(images(2), CAPTIONS, "t")
    with pytest.raises(InputError, match="1 verdicts for 3 images"):
        contact_sheet(images(3), CAPTIONS, "t", verdicts=[True])


def test_write_png_round_trips(tmp_path):
    sheet = contact_sheet(images(2), CAPTIONS[:2], "t")
    path = write_png(sheet, tmp_path / "sub" / "sheet.png")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["sheet.png"]  # no temporary left behind
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(sheet))
