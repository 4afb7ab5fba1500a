"""The loss-curve picture of a training run (Pillow only: no plotting library needed)."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

_COLOURS = ("#1d4ed8", "#dc2626", "#15803d", "#7c3aed", "#f59e0b", "#0891b2", "#be185d", "#4b5563")
_W, _H, _PAD = 900, 420, 50


def draw_loss_curves(history: dict[str, list[tuple[int, float]]]) -> bytes:
    """One panel: every series on a log scale against the global step, with a legend. PNG bytes."""
    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    series = {k: [(s, v) for s, v in pts if v > 0 and math.isfinite(v)] for k, pts in history.items()}
    series = {k: pts for k, pts in series.items() if pts}
    draw.rectangle([_PAD, _PAD // 2, _W - 220, _H - _PAD], outline="black")
    if not series:
        draw.text((_PAD + 10, _PAD), "no losses recorded yet", fill="black")
        return _png(img)
    steps = [s for pts in series.values() for s, _ in pts]
    values = [math.log10(v) for pts in series.values() for _, v in pts]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    v0, v1 = math.floor(min(values)), math.ceil(max(values))
    v1 = max(v1, v0 + 1)
    left, top, right, bottom = _PAD, _PAD // 2, _W - 220, _H - _PAD

    def xy(step: int, value: float) -> tuple[float, float]:
        x = left + (step - s0) / (s1 - s0) * (right - left)
        y = bottom - (math.log10(value) - v0) / (v1 - v0) * (bottom - top)
        return x, y

    for decade in range(v0, v1 + 1):
        y = bottom - (decade - v0) / (v1 - v0) * (bottom - top)
        draw.line([left, y, right, y], fill="#e5e7eb")
        draw.text((4, y - 6), f"1e{decade}", fill="black")
    draw.text((left, bottom + 8), f"step {s0}", fill="black")
    draw.text((right - 80, bottom + 8), f"step {s1}", fill="black")
    for index, (name, pts) in enumerate(sorted(series.items())):
        colour = _COLOURS[index % len(_COLOURS)]
        if len(pts) > 1:
            draw.line([xy(s, v) for s, v in pts], fill=colour, width=2)
        draw.text((right + 15, top + 18 * index), f"{name}: {pts[-1][1]:.4g}", fill=colour)
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
