"""Detections against the layout: which objects are in their box, and what else is wrong.

The checking detector is asked one query per caption ("a photo of a blue cup") and one per thing
the negative prompt excludes ("a photo of a cat" for "cats"); each detection is named by the query
that won it; a detector may name one thing by several queries (the shapes detector answers "a
circle" and "a red circle" with the same red circle), and a box returned under several names is
one detection. Detections are matched one-to-one to the boxes of the objects whose caption is one
of their names, best overlap first; a detection counts as *in* a box when their IoU is at least
``IOU_IN_BOX`` or when it lies mostly inside the box (a small object drawn inside a generous box
is where it should be).

- an object with a detection in its box is found;
- an object without one is *misplaced* if a detection of its caption is left over elsewhere (one
  per object), else *missing*;
- detections left over after that are *extra* ("three cats" asked, four drawn), under their most
  specific caption;
- any other detection of an excluded thing is *unwanted* (an object the layout asks for is not).

Objects whose query the detector cannot answer (the shapes detector knows only its world's
words) are *unchecked*: neither found nor missing. Pure Python: no torch, no images.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache

from lmd_bot.eval.predicates import NamedBox
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.selfcheck.report import FIXABLE, Finding, Problem

IOU_IN_BOX = 0.3
INSIDE_SHARE = 0.8  # or this share of the detection's area inside the box
QUERY_PREFIX = "a photo of "

Xyxy = tuple[float, float, float, float]


@cache
def _inflect():
    import inflect

    return inflect.engine()


def object_query(caption: str) -> str:
    return QUERY_PREFIX + caption.strip()


def excluded_things(negative: str) -> list[str]:
    """The things a negative prompt names, singular with an article: "cats, dogs" -> ["a cat", "a dog"]."""
    engine = _inflect()
    out: list[str] = []
    for part in re.split(r",|;|\band\b", negative):
        words = part.strip().lower()
        if not words:
            continue
        words = re.sub(r"^((an?|the|no|any|some|\d+|one|two|three|four|five|six|many)\s+)+", "", words)
        singular = engine.singular_noun(words) or words
        thing = engine.a(singular)
        if thing not in out:
            out.append(thing)
    return out


def queries(layout: SceneLayout) -> list[str]:
    """The queries for ``layout``: its captions', then its excluded things' (no repeats)."""
    out = [object_query(o.caption) for o in layout.sorted_objects()]
    out += [QUERY_PREFIX + thing for thing in excluded_things(layout.negative)]
    return list(dict.fromkeys(out))


def _xyxy(box: tuple[float, float, float, float]) -> Xyxy:
    x, y, w, h = box
    return x, y, x + w, y + h


def _iou(a: Xyxy, b: Xyxy) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def in_box(detection: Xyxy, box: Xyxy) -> float:
    """How well ``detection`` sits in ``box``: its IoU if it counts as in it, else 0."""
    iou = _iou(detection, box)
    area = (detection[2] - detection[0]) * (detection[3] - detection[1])
    iw = max(0.0, min(detection[2], box[2]) - max(detection[0], box[0]))
    ih = max(0.0, min(detection[3], box[3]) - max(detection[1], box[1]))
    inside = iw * ih / area if area > 0 else 0.0
    return max(iou, 1e-6) if iou >= IOU_IN_BOX or inside >= INSIDE_SHARE else 0.0


@dataclass(frozen=True)
class Assessment:
    """One image checked against its layout."""

    found_ids: frozenset[int]
    unchecked_ids: frozenset[int]
    findings: tuple[Finding, ...]

    @property
    def fixable_ids(self) -> tuple[int, ...]:
        """Objects a re-generation may fix: missing or outside their box."""
        return tuple(f.object_id for f in self.findings if f.problem in FIXABLE and f.object_id is not None)

    @property
    def score(self) -> tuple[int, int]:
        """Higher is better: objects found, then fewer extra and unwanted things."""
        penalty = sum(f.count for f in self.findings if f.problem not in FIXABLE)
        return len(self.found_ids), -penalty


def _name(box: NamedBox) -> str:
    return box.name.removeprefix(QUERY_PREFIX)


@dataclass
class _Detection:
    """One thing in the image and every query it answers (OWL names a box once; the shapes
    detector names a red circle "a red circle" and "a circle" when asked both)."""

    box: Xyxy
    names: set[str]

    def specific(self, captions: Collection[str]) -> str | None:
        """Its most specific name among ``captions`` (the longest: "a red circle" over "a circle")."""
        fits = [c for c in captions if c in self.names]
        return max(fits, key=len) if fits else None


def _detections(detections: Sequence[NamedBox], sx: float, sy: float) -> list[_Detection]:
    """``detections`` in layout coordinates, one per box: a box returned under several names is one
    detection with several names."""
    out: dict[Xyxy, _Detection] = {}
    for d in detections:
        x0, y0, x1, y1 = _xyxy(d.box)
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        out.setdefault(box, _Detection(box, set())).names.add(_name(d))
    return list(out.values())


def assess(
    layout: SceneLayout,
    detections: Sequence[NamedBox],
    image_size: tuple[int, int],
    *,
    unanswerable: Collection[str] = (),
) -> Assessment:
    """Match ``detections`` (boxes ``[x, y, w, h]`` in the pixels of an image of ``image_size``,
    named by their query with or without "a photo of ") to ``layout``'s boxes. Each detection
    goes to one object at most, whichever of its names that object's caption is."""
    sx, sy = layout.width / image_size[0], layout.height / image_size[1]
    things = _detections(detections, sx, sy)
    objects = [o for o in layout.sorted_objects() if object_query(o.caption) not in unanswerable]
    unchecked = {o.id for o in layout.objects} - {o.id for o in objects}
    captions = list(dict.fromkeys(o.caption.strip() for o in objects))

    pairs = sorted(
        (
            (-in_box(thing.box, (o.box.x, o.box.y, o.box.x1, o.box.y1)), i, j)
            for i, o in enumerate(objects)
            for j, thing in enumerate(things)
            if o.caption.strip() in thing.names
        ),
    )
    matched: dict[int, int] = {}  # object index -> detection index
    for quality, i, j in pairs:
        if quality < 0 and i not in matched and j not in matched.values():
            matched[i] = j
    spare = [j for j in range(len(things)) if j not in matched.values()]

    per_caption: dict[str, list[Finding]] = {c: [] for c in captions}
    found: set[int] = set()
    for i, obj in enumerate(objects):
        caption = obj.caption.strip()
        if i in matched:
            found.add(obj.id)
            continue
        elsewhere = next((j for j in spare if caption in things[j].names), None)
        if elsewhere is not None:
            spare.remove(elsewhere)
            per_caption[caption].append(Finding(problem=Problem.MISPLACED, caption=caption, object_id=obj.id))
        else:
            per_caption[caption].append(Finding(problem=Problem.MISSING, caption=caption, object_id=obj.id))
    extra: dict[str, int] = {}
    for j in spare:
        caption = things[j].specific(captions)
        if caption is not None:
            extra[caption] = extra.get(caption, 0) + 1
    findings: list[Finding] = []
    for caption in captions:
        findings += per_caption[caption]
        if caption in extra:
            findings.append(Finding(problem=Problem.EXTRA, caption=caption, count=extra[caption]))

    claimed = set(range(len(things))) - set(spare)  # in an object's box, or its object's elsewhere
    for thing in excluded_things(layout.negative):
        if QUERY_PREFIX + thing in unanswerable or thing in captions:
            continue  # a thing both asked for and excluded: the objects decide
        # a detection that is one of the layout's objects is not unwanted ("a red circle" asked,
        # "circles" excluded: the red circle stays)
        count = sum(thing in t.names for j, t in enumerate(things) if j not in claimed)
        if count:
            findings.append(Finding(problem=Problem.UNWANTED, caption=thing, count=count))
    return Assessment(frozenset(found), frozenset(unchecked), tuple(findings))
