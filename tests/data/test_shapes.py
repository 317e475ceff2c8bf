"""The procedural shapes dataset and the torch-free adherence scorer that judges runtime outputs."""

import numpy as np
import pytest

from genrt.adherence import adheres, describe, score
from genrt.errors import InputError
from genrt.sdk.data.shapes import BOX_FRACTION, ShapesDataset, render
from genrt.shapes import BACKGROUNDS, COLOURS, Scene, all_captions, all_scenes, parse_caption


def test_vocabulary_has_36_distinct_captions_that_parse_back():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 36
    assert [parse_caption(c) for c in captions] == list(all_scenes())
    assert parse_caption("a yellow triangle on a black background") == Scene("yellow", "triangle", "black")


@pytest.mark.parametrize("caption", ["a pink circle on a white background", "a red hexagon on a black background",
                                     "red circle", "", "a red circle on a grey background"])
def test_unknown_caption_is_refused_naming_the_vocabulary(caption):
    with pytest.raises(InputError, match="not one of the 36 shapes captions.*purple"):
        parse_caption(caption)


def test_dataset_is_deterministic_by_seed_and_index():
    first, again, other = ShapesDataset(seed=3)[17], ShapesDataset(seed=3)[17], ShapesDataset(seed=4)[17]
    assert first.image.dtype == np.uint8 and first.image.shape == (64, 64, 3)
    assert np.array_equal(first.image, again.image) and first.scene == again.scene
    assert not np.array_equal(first.image, other.image)


def test_boxes_lie_inside_the_image_at_40_to_70_percent_of_the_side():
    dataset = ShapesDataset(seed=0)
    for index in range(200):
        left, top, side = dataset[index].box
        assert BOX_FRACTION[0] * 64 <= side <= BOX_FRACTION[1] * 64
        assert left >= 0 and top >= 0 and left + side <= 64 and top + side <= 64


def test_edges_are_antialiased_and_the_fill_has_the_named_colours():
    scene = Scene("blue", "circle", "white")
    image = render(scene, (10.3, 12.7, 30.0))
    colours = {tuple(p) for p in image.reshape(-1, 3)}
    assert COLOURS["blue"] in colours and BACKGROUNDS["white"] in colours
    assert len(colours) > 10  # blended edge pixels between the two
    assert tuple(image[0, 0]) == BACKGROUNDS["white"] and tuple(image[27, 25]) == COLOURS["blue"]


def test_scorer_reads_at_least_99_percent_of_the_dataset_right():
    samples = [ShapesDataset(seed=11)[i] for i in range(1000)]
    result = score([s.image for s in samples], [s.caption for s in samples])
    assert result.total == 1000
    assert result.rate >= 0.99, result
    assert min(result.colour, result.shape, result.background) >= 990


def test_each_image_adheres_to_its_own_caption_only():
    for sample in (ShapesDataset(seed=5)[i] for i in range(60)):
        matches = [c for c in all_captions() if adheres(sample.image, c)]
        assert matches == [sample.caption]


def test_scorer_survives_pixel_noise():
    rng = np.random.default_rng(0)
    samples = [ShapesDataset(seed=2)[i] for i in range(200)]
    noisy = [np.clip(s.image + rng.normal(0, 12, s.image.shape), 0, 255).astype(np.uint8) for s in samples]
    assert score(noisy, [s.caption for s in samples]).rate >= 0.97


def test_a_plain_image_shows_nothing_and_adheres_to_no_caption():
    plain = np.full((64, 64, 3), 255, np.uint8)
    assert describe(plain) is None
    assert score([plain], ["a red circle on a white background"]).adherent == 0


def test_scorer_refuses_what_is_not_one_rgb_image():
    with pytest.raises(InputError, match=r"not \(H, W, 3\)"):
        describe(np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="2 images for 1 captions"):
        score([np.zeros((64, 64, 3), np.uint8)] * 2, ["a red circle on a white background"])
