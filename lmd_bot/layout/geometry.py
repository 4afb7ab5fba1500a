"""Box geometry: the only place that converts between box conventions.

Conventions (docs/method.md, "Geometry"):
- ``xywh`` pixels: ``[x, y, w, h]`` from the top-left of the canvas, as the LLM speaks them;
- ``nbox``: normalized ``(x0, y0, x1, y1)`` in [0, 1], the internal format of the controller;
- grid rectangles: integer cells on a latent or attention grid of ``grid_h x grid_w``.
"""

from __future__ import annotations

from typing import NamedTuple

NBox = tuple[float, float, float, float]


class GridRect(NamedTuple):
    """Half-open integer rectangle on a grid: rows ``y0:y1``, columns ``x0:x1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


def xywh_to_xyxy_norm(x: float, y: float, w: float, h: float, width: int, height: int) -> NBox:
    """Pixel ``[x, y, w, h]`` to normalized ``(x0, y0, x1, y1)``.

    Computed as the reference does (``x1 = x0 + w / W``), so the floats match it bit for bit.
    """
    x0, y0 = x / width, y / height
    return (x0, y0, x0 + w / width, y0 + h / height)


def nbox_to_grid_rect(nbox: NBox, grid_h: int, grid_w: int) -> GridRect:
    """Rasterize a normalized box on a ``grid_h x grid_w`` grid (reference ``scale_proportion``).

    The origin and the size are rounded separately (``x1 = round(x0 * W) + round((x1 - x0) * W)``)
    so a box keeps its size in cells wherever it is shifted; the result is clamped to the grid.
    Python's ``round`` rounds halves to even, as numpy's does in the reference.
    """
    x0, y0, x1, y1 = nbox
    gx0 = round(x0 * grid_w)
    gy0 = round(y0 * grid_h)
    gx1 = gx0 + round((x1 - x0) * grid_w)
    gy1 = gy0 + round((y1 - y0) * grid_h)
    return GridRect(
        min(max(gx0, 0), grid_w),
        min(max(gy0, 0), grid_h),
        min(max(gx1, 0), grid_w),
        min(max(gy1, 0), grid_h),
    )


def centered_nbox(nbox: NBox, floor_padding: float = 0.2) -> NBox:
    """The box LMD generates an object in on its own (section 3.6, step 1).

    Same size; horizontally centred at 0.5; its bottom edge at ``1 - floor_padding``. A box taller
    than ``1 - floor_padding`` would poke out of the top and lose its upper part, so it is moved
    down to start at the top edge instead (the reference leaves it cut off).
    """
    x0, y0, x1, y1 = nbox
    w, h = x1 - x0, y1 - y0
    cx0 = 0.5 - w / 2
    cy0 = max(0.0, 1.0 - floor_padding - h)
    return (cx0, cy0, cx0 + w, cy0 + h)


def box_center(nbox: NBox) -> tuple[float, float]:
    x0, y0, x1, y1 = nbox
    return ((x0 + x1) / 2, (y0 + y1) / 2)
