"""Candidate grids: several renders of one layout side by side, numbered for the pick.

Two columns, as many rows as needed (four candidates: 2x2), tiles in seed order, each numbered
in its top-left corner (1, 2, …) as the pick buttons are. The overlay grid draws the layout over
every tile and puts the legend strip once, under the grid. Pure Pillow; PNG bytes out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.overlay import FONT_DIR, draw_overlay

COLUMNS = 2
_BACKDROP = (32, 34, 37)  # Discord's dark theme: the gaps read as part of the message
_BADGE = (124, 92, 255)  # the bot's accent colour
_FONT = "DejaVuSans-Bold.ttf"


def _open(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def _to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, number: int, side: int) -> None:
    from PIL import ImageFont

    radius = max(10, side // 22)
    cx, cy = x + radius + radius // 2, y + radius + radius // 2
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=_BADGE, outline=(255, 255, 255))
    font = ImageFont.truetype(str(FONT_DIR / _FONT), round(radius * 1.3))
    draw.text((cx, cy), str(number), font=font, fill=(255, 255, 255), anchor="mm")


def tile(images: Sequence[Image.Image], *, gap: int | None = None) -> Image.Image:
    """``images`` (one size) in a numbered grid of two columns."""
    if not images:
        raise ValueError("a grid needs at least one image")
    w, h = images[0].size
    gap = max(2, max(w, h) // 128) if gap is None else gap
    columns = min(COLUMNS, len(images))
    rows = -(-len(images) // columns)
    out = Image.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap), _BACKDROP)
    draw = ImageDraw.Draw(out)
    for index, image in enumerate(images):
        x, y = (index % columns) * (w + gap), (index // columns) * (h + gap)
        out.paste(image.resize((w, h)) if image.size != (w, h) else image, (x, y))
        _badge(draw, x, y, index + 1, max(w, h))
    return out


def grid_png(pngs: Sequence[bytes]) -> bytes:
    """The candidates' images in one numbered grid."""
    return _to_png(tile([_open(png) for png in pngs]))


def grid_overlay_png(layout: SceneLayout, overlays: Sequence[bytes]) -> bytes:
    """The candidates' overlays (:func:`lmd_bot.overlay.draw_overlay` of each) in one numbered
    grid, with the layout's legend strip once, under it."""
    pictures = [_open(png) for png in overlays]
    height = layout.height  # an overlay is the canvas, then its legend strip
    grid = tile([p.crop((0, 0, p.width, height)) for p in pictures])
    legend = pictures[0].crop((0, height, pictures[0].width, pictures[0].height))
    out = Image.new("RGB", (grid.width, grid.height + legend.height), _BACKDROP)
    out.paste(grid, (0, 0))
    out.paste(legend, ((grid.width - legend.width) // 2, grid.height))
    return _to_png(out)


def candidate_overlays(layout: SceneLayout, pngs: Sequence[bytes]) -> list[bytes]:
    """The layout over each candidate (grids are not self-checked: no object is marked missing)."""
    return [draw_overlay(layout, png) for png in pngs]
