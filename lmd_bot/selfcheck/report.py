"""What the self-check found and did: one :class:`CheckReport` per checked render.

It travels with the image from the GPU worker to the bot (pickled over the worker's pipe, as JSON
through Redis), so it is plain data: no torch, no PIL.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

_ARTICLE = re.compile(r"^(an?|the)\s+", re.IGNORECASE)


class Problem(StrEnum):
    MISSING = "missing"  # no detection of the object anywhere
    MISPLACED = "misplaced"  # detected, but not in its box
    EXTRA = "extra"  # more detections of a caption than the layout has objects with it
    UNWANTED = "unwanted"  # something the layout's negative prompt excludes is there


FIXABLE = frozenset({Problem.MISSING, Problem.MISPLACED})


class Finding(BaseModel):
    """One problem: an object's (``object_id`` set) or a caption's (extras, unwanted things)."""

    model_config = ConfigDict(frozen=True)

    problem: Problem
    caption: str
    object_id: int | None = None
    count: int = 1  # extras: how many more than asked


def the(caption: str) -> str:
    """ "a blue cup" -> "the blue cup"."""
    return "the " + _ARTICLE.sub("", caption.strip(), count=1)


class CheckReport(BaseModel):
    """The self-check of one render: the final image's findings and what the retries fixed."""

    model_config = ConfigDict(frozen=True)

    detector: str  # the checking detector's name ("OWLv2", "shapes")
    objects: int  # objects in the layout
    found: int  # of them, found in their box in the kept image
    unchecked: int = 0  # objects the detector cannot be asked about (not counted either way)
    fixed: tuple[str, ...] = ()  # captions of objects wrong at first and right in the kept image
    remaining: tuple[Finding, ...] = ()  # what is still wrong in the kept image
    retries: int = 0  # re-renders run
    max_retries: int = 0
    seconds: float = Field(0.0, ge=0)  # extra wall time: detection and re-renders
    error: str = ""  # the check could not run (the image is the unchecked one)

    @property
    def missing_ids(self) -> tuple[int, ...]:
        """Objects still missing or outside their box: the overlay marks them."""
        return tuple(f.object_id for f in self.remaining if f.problem in FIXABLE and f.object_id is not None)

    def line(self) -> str:
        """One line for the reply: "self-check: 4/4 objects found; fixed 1 (the blue cup) in 1 retry"."""
        if self.error:
            return f"self-check could not run ({self.error}); the image is unchecked"
        checked = self.objects - self.unchecked
        parts = [f"self-check: {self.found}/{checked} objects found"]
        if self.unchecked:
            parts[0] += f" ({self.unchecked} not checkable by the {self.detector} detector)"
        if self.fixed:
            retries = f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}"
            parts.append(f"fixed {len(self.fixed)} ({', '.join(map(the, self.fixed))}) in {retries}")
        by_problem: dict[Problem, list[str]] = {}
        for f in self.remaining:
            text = f"{f.count} × {the(f.caption)[4:]}" if f.problem is Problem.EXTRA else the(f.caption)
            by_problem.setdefault(f.problem, []).append(text)
        words = {
            Problem.MISSING: "still missing",
            Problem.MISPLACED: "outside its box",
            Problem.EXTRA: "extra",
            Problem.UNWANTED: "unwanted but present",
        }
        for problem, texts in by_problem.items():
            parts.append(f"{words[problem]}: {', '.join(texts)}")
        unfixed = any(f.problem in FIXABLE for f in self.remaining)
        if unfixed and self.retries and not self.fixed:
            parts.append(f"{self.retries} retr{'y' if self.retries == 1 else 'ies'} did not fix it")
        elif unfixed and not self.max_retries:
            parts.append("retries are off")
        return "; ".join(parts)
