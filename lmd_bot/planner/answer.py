"""What the LLM answers, before our validation: the JSON answer schema and the LMD text reader.

Both backends turn the model's text into a :class:`RawAnswer` (a reply, or raw objects that may
still break every rule) or raise :class:`AnswerError` listing what is wrong, which the planner
sends back to the model. Range checks and repairs happen later, in the planner, through
:func:`lmd_bot.layout.repair.repair_layout`.

The JSON schema (:class:`PlannerAnswer`) is what the Anthropic backend asks for in the API's
JSON-schema output mode. The API enforces its shape (every field required, boxes as objects of
integers) but not numeric ranges, so it has no ``ge``/``le`` constraints: those would only move
into descriptions and be checked twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from lmd_bot.errors import LayoutError
from lmd_bot.layout.io import describe_validation_error
from lmd_bot.layout.lmd_text import parse_lmd_text
from lmd_bot.layout.repair import RawObject


class AnswerError(Exception):
    """The model's answer cannot be read; ``problems`` go back to the model."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class RawAnswer:
    """A reply, or a layout as the model gave it (ids: the model's, or ``None`` for new objects)."""

    reply: str | None = None
    objects: list[RawObject] = field(default_factory=list)
    background: str = ""
    negative: str = ""


# A Markdown code fence around an answer, which models write when no output mode forbids it.
_FENCE = re.compile(r"^```[\w-]*\s*\n?|\n?```\s*$")


# --- JSON (Anthropic) ------------------------------------------------------------------------


class BoxAnswer(BaseModel):
    """A box in canvas pixels; the planner checks the ranges."""

    x: int = Field(description="left edge, 0 to 512")
    y: int = Field(description="top edge, 0 to 512")
    w: int = Field(description="width, more than 0; x + w <= 512")
    h: int = Field(description="height, more than 0; y + h <= 512")


class ObjectAnswer(BaseModel):
    id: int = Field(description="the object's id in the previous layout if it is the same object; 0 if new")
    caption: str = Field(description="one object and its attributes, a short English noun phrase")
    box: BoxAnswer


class LayoutAnswer(BaseModel):
    objects: list[ObjectAnswer]
    background: str = Field(description="the setting and style, in English, without the boxed objects")
    negative: str = Field(description="what must not appear, comma-separated, in English; may be empty")


class PlannerAnswer(BaseModel):
    """The whole answer: a layout, or a short reply when the message is not a scene."""

    kind: Literal["layout", "reply"]
    layout: LayoutAnswer | None
    reply: str | None


def read_json_answer(text: str) -> RawAnswer:
    """Read an answer in the JSON schema (the Anthropic backend's), in a code fence or not: the
    API's JSON-schema mode never writes one, but a gateway that drops that mode leaves the model
    to format the answer itself."""
    try:
        answer = PlannerAnswer.model_validate_json(_FENCE.sub("", text.strip()))
    except ValidationError as exc:
        lines = describe_validation_error(exc)
        raise AnswerError([f"the answer is not valid JSON for the schema: {'; '.join(lines[:3])}"]) from None
    if answer.kind == "reply":
        if not answer.reply or not answer.reply.strip():
            raise AnswerError(['"kind" is "reply" but the reply is empty'])
        return RawAnswer(reply=answer.reply)
    if answer.layout is None:
        raise AnswerError(['"kind" is "layout" but "layout" is null'])
    return RawAnswer(
        objects=[
            RawObject(caption=o.caption, box=o.box.model_dump(), id=o.id) for o in answer.layout.objects
        ],
        background=answer.layout.background,
        negative=answer.layout.negative,
    )


# --- LMD text (OpenAI-compatible) ------------------------------------------------------------

# A reasoning model served without a reasoning parser sends its thoughts first, inline.
_THINKING = re.compile(r"^\s*<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)

# The format's labels in Markdown bold or italics ("**Background prompt:**", "__Objects__:").
_EMPHASIS = re.compile(r"[*_]{1,2}(Objects|Background prompt|Negative prompt)(?::[*_]{1,2}|[*_]{1,2}:)")
# "Reply:", as small models also write it: "**Reply:**", "reply:", "*Reply*:".
_REPLY = re.compile(r"[*_]{0,2}reply[*_]{0,2}\s*:[*_]{0,2}\s*", re.IGNORECASE)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def read_lmd_answer(text: str) -> RawAnswer:
    """Read an answer in the LMD text format, or a ``Reply: ...`` line. Ids are left to matching.

    The background and negative prompts are one line each, as the format writes them: what a
    chat model adds after the answer ("I hope this works for you!") is not part of them.
    """
    text = _THINKING.sub("", text, count=1)
    # Small local models like to wrap the answer in a Markdown code fence.
    text = _FENCE.sub("", text.strip()).strip()
    text = _EMPHASIS.sub(r"\1:", text)
    label = _REPLY.match(text)
    if label is not None and "Background prompt:" not in text:
        reply = text[label.end() :].strip()
        if not reply:
            raise AnswerError(["the reply is empty"])
        return RawAnswer(reply=reply)
    try:
        parsed = parse_lmd_text(text)
    except LayoutError as exc:
        raise AnswerError([f"the answer is not in the format: {exc}"]) from None
    negative = _first_line(parsed.negative)
    return RawAnswer(
        objects=parsed.objects,
        background=_first_line(parsed.background),
        negative="" if negative == "None" else negative,
    )
