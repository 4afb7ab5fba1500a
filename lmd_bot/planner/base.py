"""The planner interface every backend implements, and the types it speaks."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.layout.canvas import SQUARE_512, Canvas
from lmd_bot.layout.schema import SceneLayout


class PlanRound(BaseModel):
    """One round of a scene's history: what the user asked, and the layout that answered it.

    The first round's ``instruction`` is the original prompt.
    """

    model_config = ConfigDict(frozen=True)

    instruction: str
    layout: SceneLayout


class Usage(BaseModel):
    """Token usage of one planning call (all attempts), for cost tracking."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


class PlanResult(BaseModel):
    """Either a validated layout, or a short reply to the user (the request was not a scene edit)."""

    layout: SceneLayout | None = None
    reply: str | None = None
    notes: list[str] = Field(default_factory=list)  # repairs applied to the LLM's answer
    usage: Usage = Field(default_factory=Usage)
    attempts: int = 1


class Planner(Protocol):
    """Plans and revises layouts. Raises :class:`lmd_bot.errors.PlannerError` (or its subclass
    :class:`~lmd_bot.errors.PlannerBusyError`) with a user-presentable message on failure."""

    async def plan(self, prompt: str, *, canvas: Canvas = SQUARE_512) -> PlanResult:
        """A layout on ``canvas`` (or a reply)."""
        ...

    async def revise(
        self, history: list[PlanRound], instruction: str, *, canvas: Canvas | None = None
    ) -> PlanResult:
        """The next layout, on ``canvas`` (default: the last round's canvas), or a reply."""
        ...

    async def aclose(self) -> None: ...
