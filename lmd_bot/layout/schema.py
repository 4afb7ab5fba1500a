"""The scene-layout model (pydantic v2).

A :class:`SceneLayout` is what the planner produces, what the controller renders, what the
overlay draws and what the database stores: captioned boxes on a canvas, a background prompt and
a negative prompt. Each object has a stable integer ``id`` so that across rounds of editing it
keeps its identity, its overlay colour and its per-object seed.

Validation here is strict: a layout that breaks a rule raises ``pydantic.ValidationError`` naming
the field and the rule. The documented repairs (the reference's box filter and rescale, caption
clean-up, capping the object count) live in :mod:`lmd_bot.layout.repair`, which callers use on
untrusted input such as LLM answers.

Text is cleaned before validation (:func:`clean_text`): Unicode NFC, control and invisible format
characters removed, runs of whitespace collapsed, trailing full stops stripped from captions (as
the reference does).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from lmd_bot.layout.geometry import NBox, xywh_to_xyxy_norm

DEFAULT_CANVAS = 512
DEFAULT_BACKGROUND = "A realistic scene"
# Hard ceilings no configuration can lift: they bound memory and prompt length everywhere.
HARD_MAX_OBJECTS = 64
HARD_MAX_TEXT = 2000

# Zero-width (non-)joiners are part of emoji sequences (👩‍🚀) and of Persian and Indic spelling, so
# they stay where they join two visible characters.
_JOINERS = "\u200c\u200d"
_SPACES = re.compile(r"\s+")
# The LMD text format splits on these; text that contains one could not be written and read back.
RESERVED_MARKERS = ("Objects: ", "Background prompt:", "Negative prompt:")


class LayoutLimits(BaseModel):
    """Configurable caps, passed as validation context ``{"limits": LayoutLimits(...)}`` (without
    one, only the hard ceilings: :data:`STORED_LIMITS`)."""

    model_config = ConfigDict(frozen=True)

    max_objects: int = Field(16, ge=0, le=HARD_MAX_OBJECTS)
    max_caption_chars: int = Field(120, ge=8, le=HARD_MAX_TEXT)
    max_prompt_chars: int = Field(400, ge=16, le=HARD_MAX_TEXT)


# Without a context, only the hard ceilings hold. Every way a layout comes in (the planner, its
# repairs, the layout readers) passes the configured limits; a layout validated without them is
# one our own code wrote (a database row, a queued render), checked when it came in, which must
# read back whatever the limits are now: an operator may have raised or lowered them since.
STORED_LIMITS = LayoutLimits(
    max_objects=HARD_MAX_OBJECTS, max_caption_chars=HARD_MAX_TEXT, max_prompt_chars=HARD_MAX_TEXT
)


def _limits(info: ValidationInfo) -> LayoutLimits:
    ctx = info.context or {}
    limits = ctx.get("limits")
    return limits if isinstance(limits, LayoutLimits) else STORED_LIMITS


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")


def _drop_format_characters(text: str) -> str:
    # Format characters (Unicode category Cf: zero-width spaces, soft hyphens, word joiners,
    # byte-order marks, bidirectional overrides, tag characters) draw nothing: they only hide
    # words from the ban list, make an empty caption look non-empty, or make a caption render
    # misleadingly in Discord.
    out: list[str] = []
    for i, ch in enumerate(text):
        joins = ch in _JOINERS and out and _visible(out[-1]) and i + 1 < len(text) and _visible(text[i + 1])
        if joins or unicodedata.category(ch) != "Cf":
            out.append(ch)
    return "".join(out)


def clean_text(text: str) -> str:
    """Normalize user or LLM text: NFC, no control or format characters, single spaces, stripped.

    Control characters become spaces (a tab or newline separates words) and are then collapsed;
    format characters go, except a zero-width joiner between two visible characters. A lone
    surrogate (Python's stand-in for a byte that was not UTF-8: a Latin-1 terminal or argument)
    becomes U+FFFD, since no encoder, HTTP client or database can carry it (a pair of them, as a
    JSON escape may leave, becomes the character it spells).
    """
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # pairs join
    text = _drop_format_characters(unicodedata.normalize("NFC", text))
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return _SPACES.sub(" ", text).strip()


def _check_markers(text: str) -> str:
    for marker in RESERVED_MARKERS:
        if marker in text:
            raise ValueError(f"must not contain {marker!r}")
    return text


def _coerce_coordinate(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"box {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"box {name} must be a finite number, got {value!r}")
    if abs(value) > 1_000_000:
        raise ValueError(f"box {name} is absurdly large ({value!r})")
    # LLMs sometimes answer 120.0 or 120.4: the reference rounds boxes to whole pixels.
    return round(value)


class Box(BaseModel):
    """``[x, y, w, h]`` in canvas pixels, origin at the top-left (the LLM's convention).

    Accepts a 4-sequence or a mapping with ``x, y, w, h``; serializes as the list ``[x, y, w, h]``.
    Finite floats are rounded to whole pixels; width and height must be positive.
    """

    model_config = ConfigDict(frozen=True)

    x: int
    y: int
    w: int
    h: int

    @model_validator(mode="before")
    @classmethod
    def _from_sequence(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            if len(data) != 4:
                raise ValueError(f"a box needs 4 numbers [x, y, w, h], got {len(data)}")
            data = dict(zip("xywh", data, strict=True))
        if isinstance(data, dict):
            return {k: _coerce_coordinate(v, k) if k in "xywh" else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _positive_size(self) -> Box:
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"box width and height must be positive, got w={self.w}, h={self.h}")
        return self

    @model_serializer
    def _as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def to_xyxy_norm(self, width: int = DEFAULT_CANVAS, height: int = DEFAULT_CANVAS) -> NBox:
        return xywh_to_xyxy_norm(self.x, self.y, self.w, self.h, width, height)

    def inside(self, width: int, height: int) -> bool:
        return self.x >= 0 and self.y >= 0 and self.x1 <= width and self.y1 <= height


class SceneObject(BaseModel):
    """One object of the scene: a stable id, a caption with its attributes, and a box."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(ge=1, le=1_000_000)
    caption: str
    box: Box

    @field_validator("caption", mode="before")
    @classmethod
    def _clean_caption(cls, value: Any, info: ValidationInfo) -> str:
        if not isinstance(value, str):
            raise ValueError("caption must be text")
        text = clean_text(value).rstrip(".").rstrip()
        if not text:
            raise ValueError("caption is empty")
        limit = _limits(info).max_caption_chars
        if len(text) > limit:
            raise ValueError(f"caption is {len(text)} characters long; the limit is {limit}")
        return _check_markers(text)

    @property
    def word(self) -> str:
        """The head word: the caption's last whitespace token ("dog" in "a blue dog")."""
        return self.caption.rsplit(" ", 1)[-1]


class SceneLayout(BaseModel):
    """A planned scene: objects in boxes on a canvas, a background and a negative prompt."""

    model_config = ConfigDict(frozen=True)

    objects: tuple[SceneObject, ...] = ()
    background: str = DEFAULT_BACKGROUND
    negative: str = ""
    width: int = Field(DEFAULT_CANVAS, ge=64, le=2048, multiple_of=8)
    height: int = Field(DEFAULT_CANVAS, ge=64, le=2048, multiple_of=8)

    @field_validator("background", "negative", mode="before")
    @classmethod
    def _clean_prompt(cls, value: Any, info: ValidationInfo) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError("must be text")
        text = clean_text(value)
        if info.field_name == "background" and not text:
            # The LMD template's rule: no background given means "A realistic scene".
            text = DEFAULT_BACKGROUND
        if info.field_name == "negative" and text == "None":
            text = ""  # the reference reads a literal "None" as no negative prompt
        limit = _limits(info).max_prompt_chars
        if len(text) > limit:
            raise ValueError(f"is {len(text)} characters long; the limit is {limit}")
        return _check_markers(text)

    @model_validator(mode="after")
    def _check_objects(self, info: ValidationInfo) -> SceneLayout:
        limit = _limits(info).max_objects
        if len(self.objects) > limit:
            raise ValueError(f"{len(self.objects)} objects; the limit is {limit}")
        seen: set[int] = set()
        for obj in self.objects:
            if obj.id in seen:
                raise ValueError(f"object id {obj.id} is used twice")
            seen.add(obj.id)
            if not obj.box.inside(self.width, self.height):
                raise ValueError(
                    f"the box of {obj.caption!r} {obj.box.as_list()} is not inside the "
                    f"{self.width}x{self.height} canvas"
                )
            if obj.box.w >= self.width and obj.box.h >= self.height:
                raise ValueError(
                    f"the box of {obj.caption!r} covers the whole canvas; "
                    "describe it in the background prompt instead"
                )
        return self

    # --- queries -----------------------------------------------------------------------------

    def object(self, object_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)

    def next_id(self) -> int:
        return max((o.id for o in self.objects), default=0) + 1

    def sorted_objects(self) -> list[SceneObject]:
        """Objects in the controller's deterministic order: by caption (as the reference), then id."""
        return sorted(self.objects, key=lambda o: (o.caption, o.id))

    def nboxes(self) -> list[NBox]:
        return [o.box.to_xyxy_norm(self.width, self.height) for o in self.objects]

    def summary(self) -> str:
        """One line for logs and plain-text replies."""
        names = ", ".join(o.caption for o in self.objects) or "no objects"
        neg = f"; avoid: {self.negative}" if self.negative else ""
        return f"{self.background} — {names}{neg}"
