"""benchmarks.adherence without running a model: the contenders, the steps answer, the chart."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.adherence import EAGER, ORT, Contender, contenders, fewest_steps, row, series_name
from benchmarks.shapes_sampling import CaptionRun
from benchmarks.line_chart import BOTTOM, HEIGHT, LEFT, PALETTE, RIGHT, TOP, WIDTH, line_chart_png


def test_fewest_steps_is_where_every_larger_count_keeps_the_target():
    assert fewest_steps([(2, 0.5), (4, 0.95), (8, 0.88), (16, 0.92), (50, 1.0)]) == 16
    assert fewest_steps([(2, 0.9), (4, 0.95)]) == 2
    assert fewest_steps([(2, 1.0), (50, 0.8)]) is None


def test_imagen_contenders_sweep_each_stage_around_the_defaults_once():
    rows = contenders("imagen", (25, 4))
    assert rows[0] == Contender(ORT, "fp32", "ddpm", (2, 4))
    assert len(rows) == len(set(rows))
    fp32_ddpm = [r.steps for r in rows if r.backend == ORT and r.precision == "fp32" and r.sampler == "ddpm"]
    assert fp32_ddpm == [(2, 4), (4, 4), (8, 4), (16, 4), (25, 4), (25, 1), (25, 2), (25, 8)]
    assert [r for r in rows if r.backend == EAGER] == [Contender(EAGER, "fp32", "ddpm", (25, 4))]
    assert {r.sampler for r in rows} == {"ddpm", "ddim"}


def test_imagen_ddim_is_swept_again_at_its_own_guidance_in_a_series_of_its_own():
    rows = contenders("imagen", (25, 4))
    guided = [r for r in rows if r.guidance]
    assert {(r.sampler, r.guidance) for r in guided} == {("ddim", (1.0, 1.0))} and len(guided) == 8
    assert len({r.key for r in rows}) == len(rows)
    plain = Contender(ORT, "fp32", "ddim", (4, 4))
    assert plain.key == "onnxruntime-cpu/fp32/ddim/4-4"  # keys of older runs kept
    assert guided[1].key == "onnxruntime-cpu/fp32/ddim/4-4/guidance-1-1"
    run = CaptionRun(("a red circle on a white background",), np.zeros((1, 8, 8, 3), np.uint8), (0.1,))
    names = [series_name(row(r, run), "imagen", (25, 4))[0] for r in (guided[1], plain)]
    assert names == ["onnxruntime-cpu fp32 ddim guidance 1/1, base steps (SR 4)",
                     "onnxruntime-cpu fp32 ddim, base steps (SR 4)"]


def test_vqgan_has_one_point_per_backend_and_precision():
    assert [(r.backend, r.precision, r.steps) for r in contenders("vqgan", ())] == [
        (ORT, "fp32", ()), (ORT, "fp16", ()), (EAGER, "fp32", ())]


def test_line_chart_puts_points_where_the_axes_say(tmp_path):
    path = line_chart_png(tmp_path / "c.png", {"a": [(2, 0.0), (8, 1.0)], "b": [(4, 0.5)]}, "t", "steps", "adhere",
                          threshold=0.9)
    chart = np.asarray(Image.open(path).convert("RGB"))
    assert chart.shape == (HEIGHT, WIDTH, 3)
    plot_h = HEIGHT - TOP - BOTTOM
    assert tuple(chart[TOP, LEFT + 1]) != PALETTE[0]
    assert tuple(chart[TOP + 1, WIDTH - RIGHT - 1]) == PALETTE[0]  # (8, 100%): top right corner of the plot
    assert tuple(chart[TOP + plot_h // 2, LEFT + (WIDTH - LEFT - RIGHT) // 2]) == PALETTE[1]  # (4, 50%): the middle
