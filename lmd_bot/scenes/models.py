"""The records a scene is made of, as the database stores them and the services pass them around."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import MAX_CANDIDATES, Refine, RenderMode

EditorsPolicy = Literal["owner", "everyone"]
SafetyPolicy = Literal["spoiler", "withhold", "off"]


class RoundKind(StrEnum):
    PLAN = "plan"  # the first round: the planner's answer to /imagine
    REVISE = "revise"  # the planner's answer to an instruction
    REROLL = "reroll"  # the parent's layout with a new seed
    LAYOUT = "layout"  # a layout the user wrote (the Edit-layout box, a file): no planner call
    PICK = "pick"  # a candidate of the parent's grid, chosen: its seed and its image, no render


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


class MessageKind(StrEnum):
    PLAN = "plan"  # a plan picture (first or revised)
    STATUS = "status"  # a job's status message, which becomes its result
    RESULT = "result"  # a result shown again (after undo)


class SceneRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    owner_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    plan_message_id: int | None = None
    prompt: str
    mode: RenderMode
    steps: int
    seed: int  # the seed the next round renders with
    allow_everyone: bool = False
    nsfw: bool = False  # the channel is age-restricted (relaxes the safety policy if configured)
    head_round_id: int | None = None  # the round instructions apply to
    created_at: datetime


class RoundRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    scene_id: int
    parent_id: int | None
    number: int  # 1, 2, 3… in creation order within the scene, for people to refer to
    kind: RoundKind
    instruction: str
    layout: SceneLayout
    seed: int
    # Its render shows this many seeds as a grid to pick from (lmd_bot.rendering.candidate_seeds:
    # ``seed`` first); 1: a single image.
    candidates: int = Field(1, ge=1, le=MAX_CANDIDATES)
    notes: list[str] = Field(default_factory=list)
    created_at: datetime


class JobRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    scene_id: int
    round_id: int
    user_id: int
    guild_id: int | None = None
    status: JobStatus
    mode: RenderMode
    steps: int
    seed: int
    attempts: int = 0
    error: str | None = None
    status_message_id: int | None = None
    image_path: str | None = None
    overlay_path: str | None = None
    flagged: bool = False
    render_seconds: float | None = None
    refine: bool = False  # the image goes through the SDXL refiner
    refine_of: int | None = None  # a ✨ Refine job: the job whose image it refines, rendering nothing
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class MessageRef(BaseModel):
    """Which round (and job) a message the bot sent shows: how reactions and buttons find their
    scene after a restart."""

    model_config = ConfigDict(frozen=True)

    message_id: int
    scene_id: int
    round_id: int
    job_id: int | None = None
    kind: MessageKind


class ServerSettings(BaseModel):
    """What a server's admins set with /settings; ``None`` means "the bot's configured default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RenderMode | None = None
    steps: int | None = Field(None, ge=1, le=150)
    editors: EditorsPolicy | None = None
    safety: SafetyPolicy | None = None
    allowed_channel_ids: list[int] = Field(default_factory=list)
    per_user_cap: int | None = Field(None, ge=1, le=50)
    refine: Refine | None = None
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)  # seeds a new scene's renders show
