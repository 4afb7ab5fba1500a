"""A layout the user wrote: edited in the Edit-layout box or attached as a file, instead of asked
of the LLM.

It is read the way a planner answer is (:class:`lmd_bot.planner.engine.LayoutPlanner`), without
the LLM: its ids are settled against the round it edits (:func:`~lmd_bot.planner.identity.settle_ids`:
an object that keeps its id, caption or place stays the same object, with its colour and its
seed), then every box and prompt goes through :func:`~lmd_bot.layout.repair.repair_layout`, whose
notes the user sees. Two forms are read:

- JSON, as the 🗺️ Layout button shows it (:func:`editable_json`): ``objects`` (each ``id``,
  ``caption``, ``box`` as ``[x, y, w, h]`` pixels or ``{"x", "y", "w", "h"}``), ``background``,
  ``negative`` (either left out keeps the round's). Leniently: a bad object is dropped with a
  note, as a planner's would be; the canvas stays the scene's (boxes drawn on another ``width``
  and ``height`` are scaled to it).
- the LMD text format (docs/method.md), which has no ids: identity comes from the evidence only.

A Markdown code fence around either (copied from the Layout message) is ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from lmd_bot.errors import LayoutError
from lmd_bot.layout.io import load_json
from lmd_bot.layout.lmd_text import MAX_TEXT_CHARS, format_lmd_text, parse_lmd_text
from lmd_bot.layout.repair import RawObject, RepairResult, repair_layout
from lmd_bot.layout.schema import LayoutLimits, SceneLayout
from lmd_bot.planner.identity import settle_ids

# What a Discord text box holds; a longer layout is offered in the LMD text format (no ids).
EDIT_BOX_CHARS = 4000

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?|\n?```\s*$")


def editable_json(layout: SceneLayout) -> str:
    """The layout as JSON with one object a line: short enough to edit in a text box, and read
    back by :func:`read_user_layout` unchanged."""
    objects = ",\n".join(
        "    " + json.dumps({"id": o.id, "caption": o.caption, "box": o.box.as_list()}, ensure_ascii=False)
        for o in layout.objects
    )
    fields = [
        f'  "objects": [\n{objects}\n  ]' if objects else '  "objects": []',
        f'  "background": {json.dumps(layout.background, ensure_ascii=False)}',
        f'  "negative": {json.dumps(layout.negative, ensure_ascii=False)}',
        f'  "width": {layout.width}',
        f'  "height": {layout.height}',
    ]
    return "{\n" + ",\n".join(fields) + "\n}"


def edit_box_text(layout: SceneLayout) -> str | None:
    """What the Edit-layout box starts with: the JSON, or the LMD text when the JSON is too long;
    None when that is too long too (limits raised in ``layout.*``): Discord refuses such a box."""
    for text in (editable_json(layout), format_lmd_text(layout)):
        if len(text) <= EDIT_BOX_CHARS:
            return text
    return None


def _json_layout(text: str, previous: SceneLayout) -> tuple[list[RawObject], Any, Any, list[str]]:
    data = load_json(text)
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise LayoutError('the JSON needs an "objects" list (each with "caption" and "box")')
    objects = [
        RawObject(caption=o.get("caption"), box=o.get("box"), id=o.get("id"))
        if isinstance(o, dict)
        else RawObject(caption=o, box=None)
        for o in data["objects"]
    ]
    notes = []
    canvas = (data.get("width", previous.width), data.get("height", previous.height))
    if canvas != (previous.width, previous.height):
        if all(_side(v) for v in canvas):
            # Boxes drawn on another canvas (a layout from a scene of another shape) keep their
            # place in the picture: scaled in proportion, not clipped or rescaled as if off it.
            sx, sy = previous.width / canvas[0], previous.height / canvas[1]
            objects = [RawObject(o.caption, _scaled(o.box, sx, sy), o.id) for o in objects]
            notes.append(
                f"kept the scene's {previous.width}x{previous.height} canvas: the boxes, drawn on "
                f"{canvas[0]:g}x{canvas[1]:g}, were scaled to it"
            )
        else:
            notes.append(
                f"kept the scene's {previous.width}x{previous.height} canvas (the layout asked for "
                f"{canvas[0]!r:.12}x{canvas[1]!r:.12})"
            )
    prompts = []
    for key, name, kept in (
        ("background", "background", previous.background),
        ("negative", "negative prompt", previous.negative),
    ):
        # A prompt left out is one the user did not mean to change; one that is not text cannot
        # be what they meant either: both keep the scene's, which an empty default would lose.
        value = data.get(key, kept)
        if value is not None and not isinstance(value, str):
            notes.append(f"kept the scene's {name}: the layout's is not text ({value!r:.40})")
            value = kept
        prompts.append(value)
    return objects, prompts[0], prompts[1], notes


def _side(value: Any) -> bool:
    """A canvas side boxes can be scaled from."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 8 <= value <= 100_000


def _scaled(box: Any, sx: float, sy: float) -> Any:
    """``[x, y, w, h]`` (or ``{"x", "y", "w", "h"}``) scaled; anything else as it is, for the
    repairs to report."""
    if isinstance(box, dict):
        box = [box.get(k) for k in "xywh"]
    if not isinstance(box, list) or len(box) != 4:
        return box
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        return box
    x, y, w, h = box
    return [x * sx, y * sy, w * sx, h * sy]


def read_user_layout(
    text: str, previous: SceneLayout, *, used_ids: Iterable[int] = (), limits: LayoutLimits | None = None
) -> RepairResult:
    """The user's layout for the round after ``previous``, on its canvas, repaired with notes.

    Raises :class:`LayoutError` (its message says what to fix) when the text is not a layout at all.
    """
    text = _FENCE.sub("", text.removeprefix("\ufeff").strip()).strip()
    if not text:
        raise LayoutError("it is empty; paste the layout as JSON or in the LMD text format")
    if len(text) > MAX_TEXT_CHARS:
        raise LayoutError(f"it is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    if text.startswith("{"):
        objects, background, negative, notes = _json_layout(text, previous)
    elif "Background prompt:" not in text:
        # The text format's reader would say only what that format lacks; this may be JSON after
        # a word ("here: {...}"), which users mean far more often.
        raise LayoutError(
            'it is neither JSON (starting with {) nor the LMD text format (with a "Background prompt:" line)'
        )
    else:
        parsed = parse_lmd_text(text)
        objects, background, negative, notes = parsed.objects, parsed.background, parsed.negative, []
    settled = settle_ids(objects, previous, used_ids)
    repaired = repair_layout(
        settled, background, negative, width=previous.width, height=previous.height, limits=limits
    )
    if objects and not repaired.layout.objects:
        # The background alone, rendered, would be no edit the user made: say what to fix instead.
        reasons = "; ".join(repaired.notes[:3])
        raise LayoutError(f"none of its objects can be used ({reasons})", problems=repaired.notes)
    return RepairResult(repaired.layout, notes + repaired.notes)
