"""One line on what changed between two layouts: "moved: a blue cup; changed: 3 × a red apple →
a green apple". Objects are matched by their stable id."""

from __future__ import annotations

from collections import Counter

from lmd_bot.layout.schema import SceneLayout

# Boxes that moved or resized by less than this many pixels count as unchanged: the planner
# often nudges coordinates it was not asked to touch.
_TOLERANCE_PX = 4


def _counted(items: list[str]) -> str:
    counts = Counter(items)
    return ", ".join(f"{n} × {text}" if n > 1 else text for text, n in counts.items())


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= _TOLERANCE_PX


def describe_changes(old: SceneLayout, new: SceneLayout) -> str:
    """A short human summary of the edit, or "no changes"."""
    before = {o.id: o for o in old.objects}
    after = {o.id: o for o in new.objects}
    added = [after[i].caption for i in after if i not in before]
    removed = [before[i].caption for i in before if i not in after]
    changed: list[str] = []
    moved: list[str] = []
    resized: list[str] = []
    for i in before.keys() & after.keys():
        a, b = before[i], after[i]
        if a.caption != b.caption:
            changed.append(f"{a.caption} → {b.caption}")
        if not (_close(a.box.x, b.box.x) and _close(a.box.y, b.box.y)):
            moved.append(b.caption)
        elif not (_close(a.box.w, b.box.w) and _close(a.box.h, b.box.h)):
            resized.append(b.caption)
    parts = []
    if (old.width, old.height) != (new.width, new.height):
        # On a new canvas every box moves; the new shape is the news, not each box.
        parts.append(f"canvas: {old.width}x{old.height} → {new.width}x{new.height}")
        moved, resized = [], []
    for label, items in (
        ("added", added),
        ("removed", removed),
        ("changed", sorted(changed)),
        ("moved", sorted(moved)),
        ("resized", sorted(resized)),
    ):
        if items:
            parts.append(f"{label}: {_counted(items)}")
    if old.background != new.background:
        parts.append(f"background: {new.background}")
    if old.negative != new.negative:
        parts.append(f"avoid: {new.negative or 'nothing'}")
    return "; ".join(parts) or "no changes"
