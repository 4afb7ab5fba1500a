"""Turning untrusted boxes (an LLM answer, a file, a user's edit) into a valid layout.

:func:`repair_layout` applies the reference's box filter (docs/method.md, "Box repair") and a few
documented clean-ups, and reports every change it made in ``notes`` so nothing is fixed silently:

- an object whose box is not four finite numbers, or whose width or height is zero or negative,
  is dropped (the reference drops zero and negative sizes);
- an object that covers the whole canvas (``w >= W and h >= H``) or starts past its right or
  bottom edge (``x > W or y > H``) is dropped: it is the background, not an object (the
  reference's ``ignore_background``);
- if any remaining box leaves the canvas, **all** boxes are rescaled as the reference does: shifted
  so the leftmost box starts at ``x = 0``, scaled by ``min(W / span_x, H / span_y, 3)``, shifted
  vertically into the canvas, then clipped; otherwise boxes are only rounded to whole pixels;
- a caption loses control characters, trailing full stops and the colon of the text format's
  markers ("Background prompt:"); an empty one drops its object; one
  longer than the limit is cut at a word boundary; the background and negative prompts likewise;
- beyond the object cap, the first ``max_objects`` objects are kept (never silently: a note says
  how many were dropped);
- ids that are missing, invalid or repeated are replaced by fresh ones after the largest kept id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lmd_bot.layout.schema import (
    DEFAULT_CANVAS,
    RESERVED_MARKERS,
    LayoutLimits,
    SceneLayout,
    clean_text,
)

_MAX_SCALE = 3.0  # the reference never enlarges a layout more than 3x when it rescales


@dataclass(frozen=True)
class RawObject:
    """An object as it arrived: anything may be wrong with it."""

    caption: Any
    box: Any
    id: Any = None


@dataclass
class RepairResult:
    layout: SceneLayout
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)


@dataclass
class _Candidate:
    caption: str
    x: float
    y: float
    w: float
    h: float
    id: Any


def _clean(text: str) -> str:
    """clean_text, and the LMD format's markers defused ("Negative prompt:" -> "Negative prompt")."""
    text = clean_text(text)
    for marker in RESERVED_MARKERS:
        text = text.replace(marker, marker.replace(":", ""))
    return text


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;")


def _numbers(box: Any) -> list[float] | None:
    if isinstance(box, dict):
        box = [box.get(k) for k in "xywh"]
    if not isinstance(box, list | tuple) or len(box) != 4:
        return None
    out: list[float] = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        if abs(v) > 1_000_000:
            return None
        out.append(float(v))
    return out


def _label(caption: Any) -> str:
    return repr(caption if isinstance(caption, str) else str(caption))[:60]


def _rescale(cands: list[_Candidate], width: int, height: int) -> None:
    """The reference's rescale (section 2.4), in place."""
    min_x = min(c.x for c in cands)
    max_x = max(c.x + c.w for c in cands)
    min_y = min(c.y for c in cands)
    max_y = max(c.y + c.h for c in cands)
    scale = min(width / (max_x - min_x), height / (max_y - min_y), _MAX_SCALE)
    offset_y = 0.0
    if min_y * scale < 0:
        offset_y = -min_y * scale
    if max_y * scale + offset_y > height:
        offset_y -= max_y * scale + offset_y - height
    for c in cands:
        c.x = (c.x - min_x) * scale
        c.y = c.y * scale + offset_y
        c.w *= scale
        c.h *= scale


def _clip(c: _Candidate, width: int, height: int) -> tuple[int, int, int, int]:
    """Round origin and size separately (as :class:`Box` does), then clip to the canvas."""
    x, y, w, h = round(c.x), round(c.y), round(c.w), round(c.h)
    if x < 0:
        x, w = 0, w + x
    if y < 0:
        y, h = 0, h + y
    return x, y, min(w, width - x), min(h, height - y)


def repair_layout(
    objects: Sequence[RawObject],
    background: Any = "",
    negative: Any = "",
    *,
    width: int = DEFAULT_CANVAS,
    height: int = DEFAULT_CANVAS,
    limits: LayoutLimits | None = None,
) -> RepairResult:
    """Validate untrusted objects and prompts into a :class:`SceneLayout`, noting each repair."""
    limits = limits or LayoutLimits()
    notes: list[str] = []

    cands: list[_Candidate] = []
    for raw in objects:
        label = _label(raw.caption)
        if not isinstance(raw.caption, str):
            notes.append(f"dropped an object whose caption is not text ({label})")
            continue
        caption = _clean(raw.caption).rstrip(".").rstrip()
        if not caption:
            notes.append("dropped an object with an empty caption")
            continue
        if len(caption) > limits.max_caption_chars:
            caption = _truncate(caption, limits.max_caption_chars)
            notes.append(f"shortened a caption to {len(caption)} characters: {caption!r}")
        nums = _numbers(raw.box)
        if nums is None:
            notes.append(f"dropped {caption!r}: its box is not four finite numbers ({raw.box!r:.60})")
            continue
        x, y, w, h = nums
        if w <= 0 or h <= 0:
            notes.append(f"dropped {caption!r}: its box has no area (w={w:g}, h={h:g})")
            continue
        if (w >= width and h >= height) or x > width or y > height:
            notes.append(f"dropped {caption!r}: its box is the whole canvas or starts outside it")
            continue
        cands.append(_Candidate(caption, x, y, w, h, raw.id))

    if len(cands) > limits.max_objects:
        notes.append(
            f"kept the first {limits.max_objects} of {len(cands)} objects (the limit is {limits.max_objects})"
        )
        cands = cands[: limits.max_objects]

    if any(c.x < 0 or c.y < 0 or c.x + c.w > width or c.y + c.h > height for c in cands):
        _rescale(cands, width, height)
        notes.append("rescaled all boxes to fit the canvas (some went beyond its edges)")

    kept: list[tuple[_Candidate, tuple[int, int, int, int]]] = []
    for c in cands:
        box = _clip(c, width, height)
        if box[2] <= 0 or box[3] <= 0:
            notes.append(f"dropped {c.caption!r}: nothing of its box is left inside the canvas")
            continue
        if box[2] >= width and box[3] >= height:
            notes.append(f"dropped {c.caption!r}: after rescaling its box covers the whole canvas")
            continue
        kept.append((c, box))

    # Keep valid, unique ids; give the others fresh ones after the largest kept id.
    used: set[int] = set()
    for c, _ in kept:
        ok = isinstance(c.id, int) and not isinstance(c.id, bool) and 1 <= c.id <= 1_000_000
        if ok and c.id not in used:
            used.add(c.id)
        else:
            c.id = None
    next_id = max(used, default=0) + 1
    out = []
    for c, (x, y, w, h) in kept:
        if c.id is None:
            c.id = next_id
            next_id += 1
        out.append({"id": c.id, "caption": c.caption, "box": [x, y, w, h]})

    texts: dict[str, str] = {}
    for name, value in (("background", background), ("negative", negative)):
        text = _clean(value) if isinstance(value, str) else ""
        if len(text) > limits.max_prompt_chars:
            text = _truncate(text, limits.max_prompt_chars)
            notes.append(f"shortened the {name} prompt to {len(text)} characters")
        texts[name] = text

    layout = SceneLayout.model_validate(
        {"objects": out, "width": width, "height": height, **texts},
        context={"limits": limits},
    )
    return RepairResult(layout, notes)
