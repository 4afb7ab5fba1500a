"""What the planner needs from an LLM service: one request, and how to read and show answers.

Two backends implement :class:`Backend`: Anthropic's Messages API with JSON-schema output
(:mod:`lmd_bot.planner.anthropic_backend`) and OpenAI-compatible chat completions with the LMD
text format (:mod:`lmd_bot.planner.openai_backend`). The conversation, the repairs, the
deadline and the validation live in :class:`lmd_bot.planner.engine.LayoutPlanner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner.answer import RawAnswer
from lmd_bot.planner.base import Usage


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    """One answer of the model. ``stop``: ``end`` (complete), ``max_tokens`` (cut off) or
    ``refusal`` (the service declined to answer)."""

    text: str
    stop: Literal["end", "max_tokens", "refusal"]
    usage: Usage
    request_id: str | None = None


class Backend(Protocol):
    """One LLM service in one answer format."""

    #: For logs: which service and model.
    label: str

    async def complete(self, turns: list[Turn], timeout_s: float) -> Completion:
        """Send one request (no retries). Raise :class:`~lmd_bot.planner.retry.RetryableError` for
        a transient failure and :class:`~lmd_bot.errors.PlannerError` for a final one."""
        ...

    def read(self, text: str, previous: SceneLayout | None) -> RawAnswer:
        """Read an answer; ids name objects of ``previous`` or are ``None``/unknown for new ones.
        Raise :class:`~lmd_bot.planner.answer.AnswerError` when the answer cannot be read."""
        ...

    def show(self, layout: SceneLayout) -> str:
        """A stored layout as this format's answer text, for the history shown to the model."""
        ...

    async def aclose(self) -> None: ...
