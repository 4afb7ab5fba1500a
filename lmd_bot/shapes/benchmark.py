"""The LMD benchmark in the shapes world: the same four tasks and templates, the world's words.

The reference's prompts (docs/method.md, "Benchmark prompts"; :mod:`lmd_bot.eval.prompts`) with its ten COCO
classes replaced by the four shapes, its eleven colours by the world's six, and its prefix ("A
realistic photo of a scene") by one of the world's backgrounds, so that a prompt reads like the
product's own prompt form: "a night sky with three circles", "a gray wall without squares", "a
snowy field with a red circle and a blue diamond", "a white wall with a circle on the left and a
square on the right". 100 prompts per task, drawn like the reference's (numpy's legacy generator
seeded with the prompt number for attribution and spatial).

Layouts come from a deterministic template planner (:func:`plan_layout`), so the benchmark needs
no LLM: counted objects in a row or two, attribute pairs side by side, spatial pairs where the
prompt says. Images are scored by :mod:`lmd_bot.shapes.detector`, with the reference's checks
(:mod:`lmd_bot.eval.predicates`).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from lmd_bot.eval.prompts import SPATIAL_PAIRS, BenchmarkPrompt, Facts, Task
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.shapes.world import IMAGE_SIZE, NUMBER_WORDS, Background, Colour, Shape

SHAPES = tuple(s.value for s in Shape)
COLOURS = tuple(c.value for c in Colour)
PER_TASK = 100
_BACKGROUNDS = tuple(Background)


def _a(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _prefix(index: int) -> str:
    return _BACKGROUNDS[index % len(_BACKGROUNDS)].value


def _draw_two(rng: np.random.RandomState, pool: tuple[str, ...]) -> tuple[str, str]:
    first, second = rng.choice(len(pool), 2, replace=False)
    return pool[int(first)], pool[int(second)]


@cache
def shapes_prompts() -> tuple[BenchmarkPrompt, ...]:
    """400 prompts, negation, numeracy, attribution, spatial; ``prompts[i].index == i``."""
    items: list[tuple[Task, str, Facts]] = []
    for shape in SHAPES:  # 4 shapes x 25 repeats
        facts = Facts(object=shape, count=0, phrases=(_a(shape),))
        items += [(Task.NEGATION, f"without {shape}s", facts)] * (PER_TASK // len(SHAPES))
    for number in range(1, 6):  # 5 numbers x 4 shapes x 5 repeats
        for shape in SHAPES:
            noun = f"{shape}s" if number > 1 else shape
            facts = Facts(object=shape, count=number, phrases=(_a(shape),))
            items += [(Task.NUMERACY, f"with {NUMBER_WORDS[number]} {noun}", facts)] * (PER_TASK // 20)
    for seed in range(PER_TASK):
        rng = np.random.RandomState(seed)
        colour1, colour2 = _draw_two(rng, COLOURS)
        shape1, shape2 = _draw_two(rng, SHAPES)
        p1, p2 = _a(f"{colour1} {shape1}"), _a(f"{colour2} {shape2}")
        facts = Facts(objects=(shape1, shape2), colors=(colour1, colour2), phrases=(p1, p2))
        items.append((Task.ATTRIBUTION, f"with {p1} and {p2}", facts))
    for seed in range(PER_TASK // len(SPATIAL_PAIRS)):
        rng = np.random.RandomState(seed)
        for loc1, loc2 in SPATIAL_PAIRS:
            shape1, shape2 = _draw_two(rng, SHAPES)
            p1, p2 = _a(shape1), _a(shape2)
            facts = Facts(objects=(shape1, shape2), phrases=(p1, p2), locations=(loc1, loc2))
            items.append((Task.SPATIAL, f"with {p1} on the {loc1} and {p2} on the {loc2}", facts))
    return tuple(
        BenchmarkPrompt(index=i, task=task, prompt=f"{_prefix(i)} {rest}", facts=facts)
        for i, (task, rest, facts) in enumerate(items)
    )


# Top-left corners of N objects of side 16 on the 64 px canvas: a row, or two rows.
_COUNT_SLOTS = {
    1: ((24, 24),),
    2: ((8, 24), (40, 24)),
    3: ((4, 24), (24, 24), (44, 24)),
    4: ((10, 8), (38, 8), (10, 40), (38, 40)),
    5: ((4, 8), (24, 8), (44, 8), (14, 40), (34, 40)),
}
# Top-left corners of the two objects (side 20) of a spatial or attribution prompt.
_PAIR_SLOTS = {"left": (6, 22), "right": (38, 22), "top": (22, 6), "bottom": (22, 38)}


def plan_layout(prompt: BenchmarkPrompt) -> SceneLayout:
    """The template planner: the layout an LLM planner should give for ``prompt`` (deterministic,
    with a little per-prompt jitter so repeated prompts are not pixel-identical)."""
    rng = np.random.RandomState(prompt.index)
    background = prompt.prompt.split(" with")[0]
    facts = prompt.facts
    objects: list[tuple[str, int, int, int]] = []  # caption, x, y, side
    negative = ""
    if prompt.task is Task.NEGATION:
        background = prompt.prompt.split(" without")[0]
        negative = f"{facts.object}s"
    elif prompt.task is Task.NUMERACY:
        for x, y in _COUNT_SLOTS[facts.count or 1]:
            objects.append((_a(facts.object or ""), x, y, 16))
    elif prompt.task is Task.ATTRIBUTION:
        for phrase, side in zip(facts.phrases, ("left", "right"), strict=True):
            objects.append((phrase, *_PAIR_SLOTS[side], 20))
    else:
        for phrase, loc in zip(facts.phrases, facts.locations, strict=True):
            objects.append((phrase, *_PAIR_SLOTS[loc], 20))
    jittered = []
    for index, (caption, x, y, side) in enumerate(objects, start=1):
        dx, dy = (int(v) for v in rng.randint(-1, 2, size=2))
        jittered.append({"id": index, "caption": caption, "box": [x + dx, y + dy, side, side]})
    return SceneLayout.model_validate(
        {
            "width": IMAGE_SIZE,
            "height": IMAGE_SIZE,
            "background": background,
            "negative": negative,
            "objects": jittered,
        }
    )


def subset(prompts: tuple[BenchmarkPrompt, ...], per_task: int) -> list[BenchmarkPrompt]:
    """The first ``per_task`` prompts of each task, spread evenly over the task's variants."""
    out = []
    for task in Task:
        items = [p for p in prompts if p.task is task]
        step = max(1, len(items) // per_task)
        out += items[::step][:per_task]
    return out
