"""The self-check's extra cost per image, for ``lmd-bot bench render`` (docs/selfcheck.md, "Cost").

What a check costs depends on what the detector sees, which random weights cannot make happen on
purpose. So, as the guidance's best and worst cases are forced by its loss threshold, the
detector's verdict is forced by a :class:`LayoutOracle`: it "detects" the layout's objects in
their boxes except those told to stay missing. The check then runs for real (the renderer's
self-check loop, its re-seeding, the per-object cache pinned for the render) in three cases:

- **no retry**: every object found (the best case: one detector call, no model call);
- **1 wrong**: one object stays missing, so it is re-generated ``retries`` times while the
  others are cache hits;
- **all wrong**: every object stays missing, every retry re-generates them all (the worst case).

Each case's extra compute is the metered render minus the same render unchecked, in sd units
(:mod:`lmd_bot.diffusion.cost`); the oracle's own time is nil, so a real detector's time (one
call per image and per retry) comes on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmd_bot.eval.predicates import NamedBox
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode, RenderRequest
from lmd_bot.selfcheck.findings import object_query


class LayoutOracle:
    """A checking detector that answers from the layout: each object is detected exactly in its
    box, except ``missing`` (object ids), which are never detected."""

    name = "layout oracle (bench)"

    def __init__(self, layout: SceneLayout, missing: frozenset[int]) -> None:
        self.layout = layout
        self.missing = missing

    def unanswerable(self, queries: list[str]) -> set[str]:
        return set()

    def detect(self, image, queries: list[str]) -> list[NamedBox]:
        sx, sy = image.width / self.layout.width, image.height / self.layout.height
        return [
            NamedBox(
                name=o.caption,
                box=(o.box.x * sx, o.box.y * sy, o.box.w * sx, o.box.h * sy),
                score=1.0,
            )
            for o in self.layout.sorted_objects()
            if o.id not in self.missing and object_query(o.caption) in queries
        ]


@dataclass(frozen=True)
class CheckCost:
    mode: RenderMode
    objects: int
    units: dict[str, float]  # case -> extra sd units per image
    retries: dict[str, int]  # case -> re-renders run
    worst_seconds: float  # extra wall time of the worst case (its renders; no detector time)


CASES = ("no retry", "1 wrong", "all wrong")


def measure_check_cost(
    pipeline,
    *,
    mode: RenderMode,
    layout: SceneLayout,
    steps: int,
    size: int,
    retries: int,
    metered: Callable,
    cache,
) -> CheckCost:
    """The three cases for one layout. ``metered(renderer, request) -> (output, sd units)`` meters a
    render; ``cache`` is cleared before each render so each case starts from nothing."""
    from lmd_bot.diffusion.renderer import DiffusionRenderer
    from lmd_bot.selfcheck.loop import SelfChecker

    request = RenderRequest(layout=layout, prompt="a photo", mode=mode, seed=0, steps=steps)
    cache.clear()
    plain, plain_units = metered(DiffusionRenderer(pipeline, size=size, cache=cache), request)
    ids = [o.id for o in layout.sorted_objects()]
    missing = {"no retry": frozenset(), "1 wrong": frozenset(ids[:1]), "all wrong": frozenset(ids)}
    units, done = {}, {}
    worst_seconds = 0.0
    for case in CASES:
        checker = SelfChecker(LayoutOracle(layout, missing[case]), max_retries=retries)
        renderer = DiffusionRenderer(pipeline, size=size, cache=cache, checker=checker)
        cache.clear()
        out, total = metered(renderer, request)
        units[case] = total - plain_units
        done[case] = int(out.stats.get("check_retries", 0))
        if case == "all wrong":
            worst_seconds = out.seconds - plain.seconds
    return CheckCost(mode, len(ids), units, done, worst_seconds)


def check_lines(costs: Sequence[CheckCost], retries: int) -> list[str]:
    header = (
        f"{'check':<5} {'mode':<5} {'objects':>7} " + " ".join(f"{c:>10}" for c in CASES) + f" {'worst s':>8}"
    )
    out = [
        f"Self-check, extra compute per image in sd units (at most {retries} retries; guidance never "
        "stops early):",
        header,
        "-" * len(header),
    ]
    for c in costs:
        cells = " ".join(f"{c.units[case]:6.2f} ({c.retries[case]})" for case in CASES)
        out.append(f"{'check':<5} {c.mode.value:<5} {c.objects:>7} {cells} {c.worst_seconds:8.2f}")
    out.append(
        "no retry: the image is right (one detector call); 1 wrong / all wrong: one / every object "
        "stays missing, so it is re-generated on every retry (retries run in brackets); worst s: "
        "the all-wrong case's extra seconds. A real detector's own time (one call per image and per "
        "retry) comes on top."
    )
    return out
