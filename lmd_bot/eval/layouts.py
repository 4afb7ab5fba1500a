"""Stage-1 evaluation: the benchmark's checks applied to the LLM's layouts (docs/method.md, "Layout scoring").

Each recorded answer is parsed as the reference parses it and its boxes are filtered as the
reference's ``filter_boxes(scale_boxes=False)`` does before the checks. That filter is not
:func:`lmd_bot.layout.repair_layout` (which also caps, clips and renumbers objects for rendering):

- an object with an empty box is skipped; a box with zero or negative width or height too;
- a box covering the whole canvas, or starting past its right or bottom edge, is background
  and skipped;
- if any kept box leaves the canvas the reference rescales *all* boxes regardless of
  ``scale_boxes=False`` (shift so the leftmost box starts at x = 0, scale by
  ``min(W / span_x, H / span_y, 3)``, shift vertically into the canvas);
- coordinates are rounded to whole pixels and names lose trailing full stops.

An answer the reference could not parse (no "Background prompt:", a malformed object list, a box
that is not four numbers, a name that is not text) uses up its entry, and the next recorded answer
for that prompt is tried, as the reference's retry loop does.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmd_bot.errors import LayoutError
from lmd_bot.eval.predicates import NamedBox, check
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.report import ItemResult
from lmd_bot.eval.responses import AnswerCursor
from lmd_bot.layout import RawObject, parse_lmd_text

CANVAS = 512
_MAX_SCALE = 3.0


def _coordinates(obj: RawObject) -> list[float] | None:
    if not isinstance(obj.caption, str):
        raise LayoutError(f"an object's name is not text ({obj.caption!r:.40})")
    if not obj.box:
        return None  # the reference skips objects with an empty box
    box = obj.box
    if not isinstance(box, list) or len(box) != 4:
        raise LayoutError(f"the box of {obj.caption!r} is not four numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        raise LayoutError(f"the box of {obj.caption!r} is not four numbers")
    return [float(v) for v in box]


def reference_filter(objects: Sequence[RawObject], size: int = CANVAS) -> list[NamedBox]:
    """The reference's stage-1 box filter (see the module docstring), in the objects' order."""
    kept: list[tuple[str, list[float]]] = []
    out_of_bounds = False
    for obj in objects:
        coords = _coordinates(obj)
        if coords is None:
            continue
        x, y, w, h = coords
        if w <= 0 or h <= 0:
            continue
        if (w >= size and h >= size) or x > size or y > size:
            continue
        out_of_bounds |= x < 0 or y < 0 or x + w > size or y + h > size
        kept.append((obj.caption, coords))
    if not kept:
        return []

    if out_of_bounds:
        min_x = min(c[0] for _, c in kept)
        min_y = min(c[1] for _, c in kept)
        max_x = max(c[0] + c[2] for _, c in kept)
        max_y = max(c[1] + c[3] for _, c in kept)
        scale = min(size / (max_x - min_x), size / (max_y - min_y), _MAX_SCALE)
        offset_y = 0.0
        if min_y * scale < 0:
            offset_y -= min_y * scale
        if max_y * scale + offset_y >= size:
            offset_y -= max_y * scale + offset_y - size
        rescaled = []
        for name, (x, y, w, h) in kept:
            x, y, w, h = (x - min_x) * scale, y * scale + offset_y, w * scale, h * scale
            if y < 0:  # only from float rounding: keep the bottom edge, clip at the top
                y, h = 0.0, h + y
            rescaled.append((name, [x, y, w, h]))
        kept = rescaled

    # round() is round-half-to-even, as numpy's np.round in the reference.
    return [
        NamedBox(name=name.rstrip("."), box=(round(x), round(y), round(w), round(h)))
        for name, (x, y, w, h) in kept
    ]


def layout_boxes(answer: str) -> list[NamedBox]:
    """The named boxes of one raw LMD-text answer; LayoutError when the reference could not parse it."""
    return reference_filter(parse_lmd_text(answer).objects)


def evaluate_layouts(
    prompts: Sequence[BenchmarkPrompt],
    responses: dict[str, list[str]],
    *,
    failures: dict[str, list[str]] | None = None,
) -> list[ItemResult]:
    """Check every prompt against its recorded answer(s).

    ``failures`` maps prompts to why calls for them gave no answer (planner errors in this run):
    repeats left without an answer fail with those reasons instead of counting as not evaluated.
    """
    unanswered = {prompt: list(reasons) for prompt, reasons in (failures or {}).items()}
    cursor = AnswerCursor(responses)
    results = []
    for item in prompts:
        errors: list[str] = []
        result: ItemResult | None = None
        while (entry := cursor.next(item.prompt)) is not None:
            position, answer = entry
            try:
                boxes = layout_boxes(answer)
            except LayoutError as exc:
                errors.append(f"answer {position + 1}: {exc}")
                continue
            verdict = check(item, boxes)
            source = f"answer {position + 1} of {len(responses[item.prompt])}"
            if errors:
                source += f" (skipped unparsable: {'; '.join(errors)})"
            result = ItemResult(
                index=item.index,
                task=item.task,
                prompt=item.prompt,
                passed=verdict.passed,
                expected=verdict.expected,
                found=verdict.found,
                source=source,
            )
            break
        if result is None:
            expected = check(item, []).expected
            base = {"index": item.index, "task": item.task, "prompt": item.prompt, "expected": expected}
            if unanswered.get(item.prompt):
                reason = unanswered[item.prompt].pop(0)
                result = ItemResult(**base, passed=False, found=reason, source="planner")
            elif errors:
                found = "no recorded answer parses: " + "; ".join(errors)
                result = ItemResult(**base, passed=False, found=found, source="recorded answers")
            else:
                result = ItemResult(**base, passed=None, found="no recorded answer for this prompt")
        results.append(result)
    return results
