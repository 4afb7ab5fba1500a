"""A grouped bar chart (PNG) of per-task accuracy: our runs next to the published numbers.

Drawn with Pillow so the benchmark needs no plotting library. Our runs get strong colours, the
published runs muted ones; every bar carries its value, and a missing value (a task that was not
evaluated) is written as "n/a" instead of a zero-height bar that would read as 0 %.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from lmd_bot.overlay import FONT_DIR

if TYPE_CHECKING:
    from lmd_bot.eval.report import Report

_OURS = ("#1d4ed8", "#dc2626", "#15803d", "#7c3aed")
_PUBLISHED = ("#94a3b8", "#f59e0b", "#2dd4bf", "#f472b6", "#a3a3a3", "#fb923c")
_GROUPS = (
    ("negation", "Negation"),
    ("numeracy", "Numeracy"),
    ("attribution", "Attribution"),
    ("spatial", "Spatial"),
    ("average", "Average"),
)
_W, _H = 1400, 720
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 330, 90, 70


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def draw_accuracy_plot(report: Report) -> bytes:
    series: list[tuple[str, str, dict[str, float | None]]] = []
    for i, run in enumerate(report.runs):
        series.append((f"{run.name} (ours)", _OURS[i % len(_OURS)], run.accuracies()))
    for i, row in enumerate(report.published):
        values = {key: row.value(key) for key, _ in _GROUPS}
        series.append((row.label, _PUBLISHED[i % len(_PUBLISHED)], values))

    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _TOP, _H - _BOTTOM  # plot area; y0 is the top (100 %)
    draw.text((_W / 2, 24), report.title, font=_font(22, bold=True), fill="black", anchor="mm")
    partial = [
        f"{run.name}: {len(run.items) - len(run.missing())} of {len(run.items)} prompts evaluated"
        for run in report.runs
        if run.missing()
    ]
    if partial:  # an accuracy over a few prompts must not pass for the benchmark's
        draw.text(
            (_W / 2, 52), "Incomplete — " + "; ".join(partial), font=_font(15), fill="#b91c1c", anchor="mm"
        )

    axis_font, small = _font(15), _font(11)
    for pct in range(0, 101, 20):
        y = y1 - (y1 - y0) * pct / 100
        draw.line([(x0, y), (x1, y)], fill="#e5e7eb" if pct else "black", width=1)
        draw.text((x0 - 8, y), f"{pct}", font=axis_font, fill="black", anchor="rm")
    draw.text((x0 - 8, y0 - 22), "accuracy (%)", font=axis_font, fill="black", anchor="lm")

    group_w = (x1 - x0) / len(_GROUPS)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for g, (key, title) in enumerate(_GROUPS):
        gx = x0 + g * group_w + group_w * 0.1
        for s, (_, color, values) in enumerate(series):
            bx = gx + s * bar_w
            value = values.get(key)
            if value is None:
                draw.text((bx + bar_w / 2, y1 - 8), "n/a", font=small, fill="#6b7280", anchor="mb")
                continue
            top = y1 - (y1 - y0) * value / 100
            draw.rectangle([bx + 1, top, bx + bar_w - 1, y1], fill=color)
            draw.text(
                (bx + bar_w / 2, top - 2), f"{round(value, 1):g}", font=small, fill="black", anchor="mb"
            )
        draw.text((x0 + (g + 0.5) * group_w, y1 + 12), title, font=axis_font, fill="black", anchor="mt")

    legend_font = _font(14)
    lx, ly = x1 + 24, y0
    for label, color, _ in series:
        draw.rectangle([lx, ly, lx + 18, ly + 18], fill=color)
        draw.text((lx + 26, ly + 9), label, font=legend_font, fill="black", anchor="lm")
        ly += 28

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
