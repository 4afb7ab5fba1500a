"""Layout -> generation spec: what the controller is asked to draw (docs/method.md, "Generation spec").

Pure Python (inflect only): no torch, so it can be built, shown and tested anywhere.

- Objects are ordered by caption, then id (``SceneLayout.sorted_objects``), as the reference sorts
  boxes by name; the order fixes the phrase order and which object is drawn first.
- The overall prompt is ``"{background} with {phrases}"``; identical captions merge into one
  phrase with a number word ("two cats"); no objects -> the background alone.
- Each object is generated alone from ``"{background} with {caption}"``.
- Negative prompts: the layout's negative prompt, then the reference's quality lists; per-object
  runs add words against crowds and crops.
- Seeds: the scene seed draws the background noise; each object's noise comes from a seed derived
  from the scene seed **and the object's id**, so an object keeps its noise when others are added,
  removed or renamed (the reference numbers per-box seeds by sorted position instead, which shifts
  every seed after an insertion).

Every phrase and caption records its character span in its prompt, so token positions are found
exactly where the phrase was placed (see :mod:`lmd_bot.diffusion.tokens`), never at an earlier
repeat of the same words in the background.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

from pydantic import BaseModel, ConfigDict

from lmd_bot.layout.geometry import NBox
from lmd_bot.layout.schema import SceneLayout

# The reference's default negative prompts (docs/method.md, "Generation spec").
OVERALL_NEGATIVE = (
    "artifacts, blurry, smooth texture, bad quality, distortions, unrealistic, distorted image, "
    "bad proportions, duplicate"
)
OBJECT_NEGATIVE_EXTRA = "two, many, group, occlusion, occluded, side, border, collate"

_ARTICLE = re.compile(r"^(an?)\s+", re.IGNORECASE)


class Span(BaseModel):
    """A phrase's character span ``[start, end)`` in its prompt."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int


class ObjectSpec(BaseModel):
    """One object, generated alone in the per-object stage."""

    model_config = ConfigDict(frozen=True)

    id: int
    caption: str
    word: str  # the head word: the caption's last whitespace token
    nbox: NBox  # target box, normalized (x0, y0, x1, y1)
    seed: int
    prompt: str  # "{background} with {caption}"
    span: Span  # the caption inside ``prompt``
    negative: str


class PhraseSpec(BaseModel):
    """One phrase of the overall prompt: a caption, or identical captions merged ("two cats")."""

    model_config = ConfigDict(frozen=True)

    text: str
    word: str  # the phrase's last whitespace token ("cats")
    span: Span  # the phrase inside the overall prompt
    object_ids: tuple[int, ...]  # the objects it stands for, in spec order


class GenerationSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    negative: str
    background: str
    seed: int  # the scene seed: background noise
    objects: tuple[ObjectSpec, ...]
    phrases: tuple[PhraseSpec, ...]

    def object(self, object_id: int) -> ObjectSpec:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)


def object_seed(scene_seed: int, object_id: int) -> int:
    """A seed for one object's noise, stable in the object's id and distinct from the scene seed.

    A hash, not ``seed + id``: with sums, seed 7's object 2 would reuse seed 8's object 1's noise.
    """
    digest = hashlib.blake2b(f"lmd-object:{scene_seed}:{object_id}".encode(), digest_size=8).digest()
    seed = int.from_bytes(digest, "big") & (2**63 - 1)
    return seed if seed != scene_seed else seed ^ 1


def negative_prompt(layout_negative: str, *, per_object: bool) -> str:
    """The layout's negative prompt (when given) followed by the reference's default list."""
    parts = [layout_negative] if layout_negative else []
    parts.append(OVERALL_NEGATIVE)
    if per_object:
        parts.append(OBJECT_NEGATIVE_EXTRA)
    return ", ".join(parts)


@cache
def _inflect_engine():
    import inflect

    return inflect.engine()


def merged_phrase(caption: str, count: int) -> str:
    """``caption`` for one object; for several, "two cats" from "a cat".

    The leading article goes, the rest is pluralized by inflect and a number word put in front.
    (The reference deletes "a "/"an " anywhere in the caption, which garbles "a man in a hat" into
    "min hat"; only a leading article is an article.)
    """
    if count == 1:
        return caption
    engine = _inflect_engine()
    noun = _ARTICLE.sub("", caption, count=1)
    return f"{engine.number_to_words(count)} {engine.plural_noun(noun)}"


def _last_word(text: str) -> str:
    return text.rsplit(" ", 1)[-1]


def build_spec(layout: SceneLayout, seed: int) -> GenerationSpec:
    """The generation spec of ``layout`` for scene seed ``seed``."""
    background = layout.background
    objects = layout.sorted_objects()

    object_specs = []
    object_negative = negative_prompt(layout.negative, per_object=True)
    for obj in objects:
        prefix = f"{background} with "
        object_specs.append(
            ObjectSpec(
                id=obj.id,
                caption=obj.caption,
                word=_last_word(obj.caption),
                nbox=obj.box.to_xyxy_norm(layout.width, layout.height),
                seed=object_seed(seed, obj.id),
                prompt=prefix + obj.caption,
                span=Span(start=len(prefix), end=len(prefix) + len(obj.caption)),
                negative=object_negative,
            )
        )

    # Group identical captions; ``objects`` is sorted by caption, so groups come out alphabetical.
    groups: dict[str, list[int]] = {}
    for obj in objects:
        groups.setdefault(obj.caption, []).append(obj.id)

    prompt = background
    phrases = []
    for index, (caption, ids) in enumerate(groups.items()):
        text = merged_phrase(caption, len(ids))
        prompt += " with " if index == 0 else ", "
        phrases.append(
            PhraseSpec(
                text=text,
                word=_last_word(text),
                span=Span(start=len(prompt), end=len(prompt) + len(text)),
                object_ids=tuple(ids),
            )
        )
        prompt += text

    return GenerationSpec(
        prompt=prompt,
        negative=negative_prompt(layout.negative, per_object=False),
        background=background,
        seed=seed,
        objects=tuple(object_specs),
        phrases=tuple(phrases),
    )
