"""Object identity across rounds: which objects of an answer are the previous round's objects.

An object keeps its id while it is "the same object" (moved, resized, recoloured, replaced in
place), so it keeps its overlay colour and its per-object seed. New objects get ids that were
never used in the scene, so a removed object's id is not handed to something else.

Two sources of identity:

- the JSON backend asks the model for ids (:func:`settle_ids` keeps those that name an object
  of the previous layout, once each, and numbers the rest);
- the LMD text format has no ids, so :func:`match_ids` recognises objects by caption and
  position: the same caption (nearest box first), then a box that mostly overlaps the old one
  (a recolour or a replacement in place), then the same head word ("a grey cat" -> "a big
  orange cat"), nearest first. Anything left is new. This keeps the reference's text format
  unchanged for small local models, at the price of guessing when an instruction both moves and
  renames an object far away (it then counts as removed and added).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from lmd_bot.layout.repair import RawObject
from lmd_bot.layout.schema import SceneLayout, SceneObject, clean_text

# A new box overlapping an old one at least this much (IoU) is the old object edited in place.
SAME_PLACE_IOU = 0.6


def _valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000


def settle_ids(
    objects: Sequence[RawObject], previous: SceneLayout | None, used_ids: Iterable[int] = ()
) -> list[RawObject]:
    """Keep each id that names an object of ``previous`` (first claim wins); number the rest.

    Fresh ids start after every id in ``used_ids`` and ``previous``, so none is ever reused.
    """
    known = {o.id for o in previous.objects} if previous else set()
    next_id = max({*known, *used_ids}, default=0) + 1
    claimed: set[int] = set()
    out = []
    for obj in objects:
        oid = obj.id
        if not (_valid_id(oid) and oid in known and oid not in claimed):
            oid = next_id
            next_id += 1
        claimed.add(oid)
        out.append(RawObject(caption=obj.caption, box=obj.box, id=oid))
    return out


Box4 = tuple[float, float, float, float]


def _box(raw: object) -> Box4 | None:
    if isinstance(raw, dict):
        raw = [raw.get(k) for k in "xywh"]
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        return None
    return (float(raw[0]), float(raw[1]), float(raw[2]), float(raw[3]))


def _centre_distance(a: Box4, b: Box4) -> float:
    return math.hypot(a[0] + a[2] / 2 - (b[0] + b[2] / 2), a[1] + a[3] / 2 - (b[1] + b[3] / 2))


def _iou(a: Box4, b: Box4) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _key(caption: object) -> str:
    return clean_text(caption).casefold() if isinstance(caption, str) else ""


def _old_box(old: SceneObject) -> Box4:
    return (old.box.x, old.box.y, old.box.w, old.box.h)


# Matching passes, strongest evidence first. Each scores a (new object, old object) pair, lower is
# better, or returns None when the pair cannot be the same object by that evidence.


def _same_caption(caption: object, box: Box4, old: SceneObject) -> float | None:
    return _centre_distance(box, _old_box(old)) if _key(caption) == old.caption.casefold() else None


def _same_place(caption: object, box: Box4, old: SceneObject) -> float | None:
    iou = _iou(box, _old_box(old))
    return -iou if iou >= SAME_PLACE_IOU else None


def _same_head_word(caption: object, box: Box4, old: SceneObject) -> float | None:
    key = _key(caption)
    head = key.rsplit(" ", 1)[-1] if key else ""
    return _centre_distance(box, _old_box(old)) if head and head == old.word.casefold() else None


def match_ids(objects: Sequence[RawObject], previous: SceneLayout) -> list[RawObject]:
    """Give each answer object the id of the previous object it most likely is, or ``None``."""
    boxes = [_box(o.box) for o in objects]
    ids: list[int | None] = [None] * len(objects)
    free: dict[int, SceneObject] = {o.id: o for o in previous.objects}
    for score in (_same_caption, _same_place, _same_head_word):
        pairs = []
        for i, obj in enumerate(objects):
            box = boxes[i]
            if ids[i] is not None or box is None:
                continue
            for old in free.values():
                value = score(obj.caption, box, old)
                if value is not None:
                    pairs.append((value, i, old.id))
        # Greedy: the best-scoring pairs are matched first, each object at most once.
        for _, i, old_id in sorted(pairs):
            if ids[i] is None and old_id in free:
                ids[i] = old_id
                del free[old_id]
    return [RawObject(caption=o.caption, box=o.box, id=i) for o, i in zip(objects, ids, strict=True)]
