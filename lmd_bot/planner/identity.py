"""Object identity across rounds: which objects of an answer are the previous round's objects.

An object keeps its id while it is "the same object" (moved, resized, recoloured, replaced in
place), so it keeps its overlay colour and its per-object seed. New objects get ids that were
never used in the scene, so a removed object's id is not handed to something else.

Two sources of identity, combined by :func:`match_ids`:

- evidence: the same caption (nearest box first), then a box that mostly overlaps the old one (a
  recolour or a replacement in place), then the same head word ("a grey cat" -> "a big orange
  cat"), nearest first;
- the ids the JSON backend asks the model for. A model sometimes renumbers objects it did not
  touch (two ids swapped, every id 0, a new object given an old object's id), which would cost
  the untouched objects their seed and look and show "a blue cup → a red apple" as the change.
  So a claimed id only settles ties within the caption and place evidence, and otherwise counts
  after it: it is kept where no stronger evidence ties the id or the object elsewhere, and before
  the head-word guess (the model knows what it renamed).

The LMD text format has no ids, so there only the evidence counts. This keeps the reference's
text format unchanged for small local models, at the price of guessing when an instruction both
moves and renames an object far away (it then counts as removed and added). Anything left
unmatched is new (:func:`settle_ids` numbers it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from lmd_bot.layout.repair import RawObject
from lmd_bot.layout.schema import SceneLayout, SceneObject, clean_text

log = logging.getLogger(__name__)

# A new box overlapping an old one at least this much (IoU) is the old object edited in place.
SAME_PLACE_IOU = 0.6


def _valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000


def settle_ids(
    objects: Sequence[RawObject], previous: SceneLayout | None, used_ids: Iterable[int] = ()
) -> list[RawObject]:
    """Give each object the id of the previous object it is (:func:`match_ids`, the claimed ids
    cross-checked against the evidence); number the rest.

    Fresh ids start after every id in ``used_ids`` and ``previous``, so none is ever reused.
    """
    known = {o.id for o in previous.objects} if previous else set()
    next_id = max({*known, *used_ids}, default=0) + 1
    if previous is not None:
        settled = match_ids(objects, previous, trust_claims=True)
        overruled = [
            (o.caption, o.id, s.id)
            for o, s in zip(objects, settled, strict=True)
            if _valid_id(o.id) and o.id in known and o.id != s.id
        ]
        if overruled:
            log.info("planner ids overruled by caption/box evidence (caption, claimed, kept): %s", overruled)
    else:
        settled = [RawObject(caption=o.caption, box=o.box, id=None) for o in objects]
    out = []
    for obj in settled:
        oid = obj.id
        if oid is None:
            oid = next_id
            next_id += 1
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


def _claimed(caption: object, box: Box4, old: SceneObject) -> float | None:
    return 0.0  # only offered for the id the object claims (see match_ids)


def match_ids(
    objects: Sequence[RawObject], previous: SceneLayout, *, trust_claims: bool = False
) -> list[RawObject]:
    """Give each answer object the id of the previous object it most likely is, or ``None``.

    With ``trust_claims``, the objects' own ids (the model's claims) take part as the module
    docstring says; otherwise they are ignored.
    """
    boxes = [_box(o.box) for o in objects]
    known = {o.id for o in previous.objects}
    claims = [o.id if trust_claims and _valid_id(o.id) and o.id in known else None for o in objects]
    ids: list[int | None] = [None] * len(objects)
    free: dict[int, SceneObject] = {o.id: o for o in previous.objects}
    for score in (_same_caption, _same_place, _claimed, _same_head_word):
        pairs = []
        for i, obj in enumerate(objects):
            box = boxes[i]
            # A claim needs no readable box (repairs deal with the box); evidence does.
            if ids[i] is not None or (box is None and score is not _claimed):
                continue
            for old in free.values():
                if score is _claimed and claims[i] != old.id:
                    continue
                value = score(obj.caption, box or (0.0, 0.0, 0.0, 0.0), old)  # _claimed reads no box
                if value is not None:
                    # A claim agreeing with the evidence goes first; then the best score, then
                    # the answer's order (the first of two claims on one id wins).
                    pairs.append((claims[i] != old.id, value, i, old.id))
        # Greedy: the best pairs are matched first, each object and old id at most once.
        for _, _, i, old_id in sorted(pairs):
            if ids[i] is None and old_id in free:
                ids[i] = old_id
                del free[old_id]
    return [RawObject(caption=o.caption, box=o.box, id=i) for o, i in zip(objects, ids, strict=True)]
