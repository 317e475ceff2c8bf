"""A line chart PNG with PIL only (matplotlib is not a dependency): y in [0, 1] against x on a log2 axis."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from genrt.fileio import atomic_path

WIDTH, HEIGHT = 900, 520  # pixels of the whole chart
LEFT, RIGHT, TOP, BOTTOM = 60, 300, 40, 50  # margins; the legend sits in the right one
LEGEND_CHARS = 40  # characters per legend line; a longer series name wraps onto the next lines
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def line_chart_png(path: str | Path, series: dict[str, Sequence[tuple[float, float]]], title: str, x_label: str,
                   y_label: str, threshold: float | None = None) -> Path:
    """One polyline with dots per series of (x > 0, y in [0, 1]) points, a dashed line at ``threshold``."""
    xs = [x for points in series.values() for x, _ in points]
    low, high = math.log2(min(xs)), math.log2(max(xs))
    span = max(high - low, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return LEFT + plot_w * (math.log2(x) - low) / span, TOP + plot_h * (1.0 - y)

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((LEFT, 12), title, fill="black")
    draw.rectangle([LEFT, TOP, LEFT + plot_w, TOP + plot_h], outline="black")
    for tick in range(0, 101, 20):
        _, y = at(2 ** low, tick / 100)
        draw.line([LEFT - 4, y, LEFT, y], fill="black")
        draw.text((LEFT - 34, y - 6), f"{tick}%", fill="black")
    for tick in sorted(set(xs)):
        x, _ = at(tick, 0.0)
        draw.line([x, TOP + plot_h, x, TOP + plot_h + 4], fill="black")
        draw.text((x - 6, TOP + plot_h + 8), f"{tick:g}", fill="black")
    draw.text((LEFT + plot_w // 2 - 30, HEIGHT - 20), x_label, fill="black")
    draw.text((6, TOP - 16), y_label, fill="black")
    if threshold is not None:
        _, y = at(2 ** low, threshold)
        for start in range(LEFT, LEFT + plot_w, 12):
            draw.line([start, y, min(start + 6, LEFT + plot_w), y], fill=(120, 120, 120))
    legend_y = TOP
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        pixels = [at(x, y) for x, y in sorted(points)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for x, y in pixels:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.line([WIDTH - RIGHT + 16, legend_y + 6, WIDTH - RIGHT + 36, legend_y + 6], fill=colour, width=3)
        for line in textwrap.wrap(name, LEGEND_CHARS):
            draw.text((WIDTH - RIGHT + 42, legend_y), line, fill="black")
            legend_y += 14
        legend_y += 4
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
