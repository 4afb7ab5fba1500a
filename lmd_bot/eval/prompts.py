"""The LMD benchmark's 400 prompts (docs/method.md, "Benchmark prompts"), each with the facts to check.

The set is generated, not stored, exactly as the reference generates it: ten COCO classes, eleven
colours, inflect for articles, plurals and number words, and numpy's legacy Mersenne-Twister
seeded with the prompt number for the random draws. The list order (negation, numeracy,
attribution, spatial) is the benchmark's: a prompt's position is its index, its image folder name
and its seed.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import inflect
    import numpy as np

PREFIX = "A realistic photo of a scene"
OBJECTS = ("backpack", "book", "bottle", "bowl", "car", "cat", "chair", "cup", "dog", "laptop")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")
Location = Literal["left", "right", "top", "bottom"]
# Spatial pairs in the order the reference draws them for each seed.
SPATIAL_PAIRS: tuple[tuple[Location, Location], ...] = (
    ("left", "right"),
    ("right", "left"),
    ("top", "bottom"),
    ("bottom", "top"),
)

NEGATION_REPEATS = 10
NUMERACY_MAX = 5
NUMERACY_REPEATS = 2
ATTRIBUTION_PROMPTS = 100
SPATIAL_SEEDS = 25


class Task(StrEnum):
    NEGATION = "negation"
    NUMERACY = "numeracy"
    ATTRIBUTION = "attribution"
    SPATIAL = "spatial"


class Facts(BaseModel):
    """What a correct layout or image shows, per task.

    - negation: ``count`` (0) of ``object`` (``phrases`` holds it with its article, "a cup");
    - numeracy: exactly ``count`` of ``object``;
    - attribution: ``phrases`` ("a blue dog", "a white bowl"), each at least once;
    - spatial: ``phrases`` ("a dog", "a cup") at ``locations`` ("left", "right").
    """

    model_config = ConfigDict(frozen=True)

    object: str | None = None
    count: int | None = None
    objects: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    locations: tuple[Location, ...] = ()


class BenchmarkPrompt(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    task: Task
    prompt: str
    facts: Facts

    @property
    def seed(self) -> int:
        """The benchmark seeds every image with the prompt's index."""
        return self.index

    def detector_queries(self) -> list[str]:
        """The open-vocabulary detector's text queries (docs/method.md, "Image scoring"): "a photo of a
        cup" for negation and numeracy, one query per phrase ("a photo of a blue dog") otherwise."""
        return [f"a photo of {phrase}" for phrase in self.facts.phrases]


Item = tuple[Task, str, Facts]


def _negation(p: inflect.engine) -> list[Item]:
    out: list[Item] = []
    for obj in OBJECTS:
        facts = Facts(object=obj, count=0, phrases=(p.a(obj),))
        out += [(Task.NEGATION, f"{PREFIX} without {p.plural(obj)}", facts)] * NEGATION_REPEATS
    return out


def _numeracy(p: inflect.engine) -> list[Item]:
    out: list[Item] = []
    for number in range(1, NUMERACY_MAX + 1):
        for obj in OBJECTS:
            noun = p.plural(obj) if number > 1 else obj
            text = f"{PREFIX} with {p.number_to_words(number)} {noun}"
            facts = Facts(object=obj, count=number, phrases=(p.a(obj),))
            out += [(Task.NUMERACY, text, facts)] * NUMERACY_REPEATS
    return out


def _draw_two(rng: np.random.RandomState, pool: tuple[str, ...]) -> tuple[str, str]:
    # np.random.choice(pool, 2, replace=False) on the legacy generator takes the first two entries
    # of a permutation of len(pool); drawing indices through the same call keeps the exact stream.
    first, second = rng.choice(len(pool), 2, replace=False)
    return pool[int(first)], pool[int(second)]


def _attribution(p: inflect.engine) -> list[Item]:
    import numpy as np

    out: list[Item] = []
    for seed in range(ATTRIBUTION_PROMPTS):
        # A private RandomState seeded like np.random.seed(seed): the same draws, no global state.
        rng = np.random.RandomState(seed)
        color1, color2 = _draw_two(rng, COLORS)
        obj1, obj2 = _draw_two(rng, OBJECTS)
        phrase1, phrase2 = f"{p.a(color1)} {obj1}", f"{p.a(color2)} {obj2}"
        facts = Facts(objects=(obj1, obj2), colors=(color1, color2), phrases=(phrase1, phrase2))
        out.append((Task.ATTRIBUTION, f"{PREFIX} with {phrase1} and {phrase2}", facts))
    return out


def _spatial(p: inflect.engine) -> list[Item]:
    import numpy as np

    out: list[Item] = []
    for seed in range(SPATIAL_SEEDS):
        rng = np.random.RandomState(seed)
        for loc1, loc2 in SPATIAL_PAIRS:
            obj1, obj2 = _draw_two(rng, OBJECTS)
            phrase1, phrase2 = p.a(obj1), p.a(obj2)
            text = f"{PREFIX} with {phrase1} on the {loc1} and {phrase2} on the {loc2}"
            facts = Facts(objects=(obj1, obj2), phrases=(phrase1, phrase2), locations=(loc1, loc2))
            out.append((Task.SPATIAL, text, facts))
    return out


@cache
def lmd_benchmark_prompts() -> tuple[BenchmarkPrompt, ...]:
    """All 400 prompts in benchmark order; ``prompts[i].index == i``. Computed once (immutable)."""
    import inflect

    p = inflect.engine()
    items = _negation(p) + _numeracy(p) + _attribution(p) + _spatial(p)
    return tuple(
        BenchmarkPrompt(index=i, task=task, prompt=text, facts=facts)
        for i, (task, text, facts) in enumerate(items)
    )
