"""The benchmark's checks (docs/method.md, "Image scoring", "Layout scoring"), on layouts and on
detections alike.

Both stages reduce to a list of named boxes: the LLM's captioned boxes (stage 1) or the
detector's boxes named by the query that won them (stage 1+2). The checks follow the reference
to the letter, quirks included, so that our numbers compare with the published ones:

- negation and numeracy count the boxes whose name *contains* the object word, with no word
  boundary ("a cupcake" counts as a cup) and need exactly the asked number (0 for negation);
- attribution needs at least one box whose name contains the coloured phrase with its article
  ("a red cup"): "a dark red cup" does not count, and one caption naming both phrases counts for
  both;
- spatial takes, for each object, the *first* box (list order: the LLM's order, or the highest
  score after NMS) whose name has the phrase followed by a space or at its end ("a car" matches
  "a car parked" but not "a carrot"), and compares box centres strictly: equal centres fail.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from lmd_bot.eval.prompts import BenchmarkPrompt, Task

_MAX_LISTED = 8  # boxes listed in a verdict's "found" text


class NamedBox(BaseModel):
    """A named box ``[x, y, w, h]`` in image pixels (a detector adds its score)."""

    model_config = ConfigDict(frozen=True)

    name: str
    box: tuple[float, float, float, float]
    score: float | None = None

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2

    def describe(self) -> str:
        coords = ", ".join(f"{v:g}" for v in (round(c, 1) for c in self.box))
        score = f" {self.score:.2f}" if self.score is not None else ""
        return f"{self.name!r} [{coords}]{score}"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    expected: str
    found: str


def count_containing(boxes: Sequence[NamedBox], text: str) -> int:
    return sum(text in b.name for b in boxes)


def first_named(boxes: Sequence[NamedBox], phrase: str) -> NamedBox | None:
    for b in boxes:
        if phrase + " " in b.name or b.name.endswith(phrase):
            return b
    return None


def _listing(boxes: Sequence[NamedBox]) -> str:
    if not boxes:
        return "no boxes"
    shown = "; ".join(b.describe() for b in boxes[:_MAX_LISTED])
    more = f"; and {len(boxes) - _MAX_LISTED} more" if len(boxes) > _MAX_LISTED else ""
    return f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}: {shown}{more}"


def _check_count(prompt: BenchmarkPrompt, boxes: Sequence[NamedBox]) -> Verdict:
    obj, want = prompt.facts.object or "", prompt.facts.count or 0
    got = count_containing(boxes, obj)
    expected = f"no {obj}" if want == 0 else f"exactly {want} × {obj}"
    return Verdict(passed=got == want, expected=expected, found=f"{got} × {obj} ({_listing(boxes)})")


def _check_attribution(prompt: BenchmarkPrompt, boxes: Sequence[NamedBox]) -> Verdict:
    phrases = prompt.facts.phrases
    counts = [count_containing(boxes, phrase) for phrase in phrases]
    expected = " and ".join(f"{phrase!r}" for phrase in phrases)
    found = ", ".join(f"{n} × {phrase!r}" for phrase, n in zip(phrases, counts, strict=True))
    return Verdict(
        passed=all(n >= 1 for n in counts), expected=expected, found=f"{found} ({_listing(boxes)})"
    )


_AXIS = {"left": 0, "right": 0, "top": 1, "bottom": 1}
_WORDS = {"left": "left of", "right": "right of", "top": "above", "bottom": "below"}


def _check_spatial(prompt: BenchmarkPrompt, boxes: Sequence[NamedBox]) -> Verdict:
    (phrase1, phrase2), (loc1, _) = prompt.facts.phrases, prompt.facts.locations
    expected = f"{phrase1!r} {_WORDS[loc1]} {phrase2!r} (box centres)"
    box1, box2 = first_named(boxes, phrase1), first_named(boxes, phrase2)
    missing = [phrase for phrase, b in ((phrase1, box1), (phrase2, box2)) if b is None]
    if box1 is None or box2 is None:
        found = f"no box for {' or '.join(map(repr, missing))} ({_listing(boxes)})"
        return Verdict(passed=False, expected=expected, found=found)
    axis = _AXIS[loc1]
    c1, c2 = box1.center[axis], box2.center[axis]
    # "left" and "top" mean a smaller coordinate (origin at the top-left); ties fail both ways.
    passed = c1 < c2 if loc1 in ("left", "top") else c1 > c2
    name = "x" if axis == 0 else "y"
    found = f"centre {name} {c1:g} for {box1.name!r}, {c2:g} for {box2.name!r}"
    return Verdict(passed=passed, expected=expected, found=found)


def check(prompt: BenchmarkPrompt, boxes: Sequence[NamedBox]) -> Verdict:
    """Apply the prompt's check to the named boxes (a layout's or an image's detections)."""
    if prompt.task in (Task.NEGATION, Task.NUMERACY):
        return _check_count(prompt, boxes)
    if prompt.task is Task.ATTRIBUTION:
        return _check_attribution(prompt, boxes)
    return _check_spatial(prompt, boxes)
