"""What the services hand to adapters (Discord cogs, the terminal chat): who acts, and what to
show. Plain data; each adapter decides how it looks."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.errors import PlannerError
from lmd_bot.rendering import Refine, RenderMode
from lmd_bot.scenes.models import (
    EditorsPolicy,
    JobRecord,
    RoundRecord,
    SafetyPolicy,
    SceneRecord,
    ServerSettings,
)
from lmd_bot.selfcheck.report import CheckReport


class Actor(BaseModel):
    """Who is asking, and where."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    guild_id: int | None = None  # None: the local console
    channel_id: int | None = None  # the text channel (a thread's parent)
    thread_id: int | None = None
    is_admin: bool = False  # may change server settings and act on anyone's jobs
    nsfw: bool = False  # the channel is age-restricted


class PlanView(BaseModel):
    """The planner answered with a layout: a new round exists. Shown in words first, with ``job``
    set once its render is queued (a new scene's plan is shown before: it opens the thread); the
    picture of the layout follows (:meth:`Presenter.show_plan_picture`)."""

    scene: SceneRecord
    round: RoundRecord
    overlay_png: bytes | None = None  # the layout's picture: None until drawn
    changes: str | None = None  # what changed from the round it was edited from; None for round 1
    notes: list[str] = Field(default_factory=list)  # repairs applied to the planner's answer
    job: JobRecord | None = None  # the round's render; None while showing, or if queueing failed


class LayoutView(BaseModel):
    """A round's layout as text to read or edit (the 🗺️ Layout button), and whether the asker may
    edit it."""

    model_config = ConfigDict(frozen=True)

    round_id: int
    round_number: int
    json_text: str  # the layout as JSON, one object a line
    # What the edit box starts with: that JSON, or LMD text if it is too long; None if that is too
    # long for the box as well (then the layout is edited as a file posted in the thread).
    edit_text: str | None
    editable: bool


class PlanShown(BaseModel):
    """Where an adapter showed a plan: the message, and the thread opened from it (a new scene's
    home; None when the plan went into the scene's existing thread)."""

    model_config = ConfigDict(frozen=True)

    message_id: int | None = None
    thread_id: int | None = None


class Voice(StrEnum):
    """Who wrote a reply's words. The planner's are not the bot's: a prompt-injected answer may
    hold markup (a masked link) or mentions, so an adapter shows them as written and pinging
    nobody; the bot's own fixed texts keep their formatting."""

    BOT = "bot"
    PLANNER = "planner"


class ReplyView(BaseModel):
    """An answer in words, where nothing renders: the planner's (the message was a question, not
    an edit), or the bot's (why a plan shown will not render)."""

    scene: SceneRecord | None = None
    text: str
    by: Voice

    @classmethod
    def planner_answer(cls, scene: SceneRecord | None, reply: str | None) -> ReplyView:
        """The planner's reply; its generic refusal (the bot's words) when it gave none."""
        if reply:
            return cls(scene=scene, text=reply, by=Voice.PLANNER)
        return cls(scene=scene, text=PlannerError.user_message, by=Voice.BOT)


class StatusView(BaseModel):
    scene: SceneRecord
    job: JobRecord
    round_number: int
    state: Literal["queued", "running", "retrying", "cancelled"]
    position: int | None = None
    waiting: int | None = None
    eta_s: float | None = None
    step: int | None = None
    total_steps: int | None = None
    preview_png: bytes | None = None
    note: str | None = None


class ResultView(BaseModel):
    scene: SceneRecord
    round: RoundRecord
    job: JobRecord
    image_png: bytes | None  # None when withheld by the safety policy
    overlay_png: bytes | None
    spoiler: bool = False
    withheld: bool = False
    render_s: float | None = None
    total_s: float | None = None  # from queued to done
    reshown: bool = False  # an older result shown again (undo), not a new render
    check: CheckReport | None = None  # the self-check of this render, when one ran
    # Guidance passes whose loss or gradient was NaN/inf: guidance stopped for those samples, so
    # the layout may be followed less closely (docs/method.md, "Numerics"). Never silent.
    guidance_nonfinite: int = 0
    # Offer a ✨ Refine button: the server refines on request and this image is not refined yet.
    refinable: bool = False

    def guidance_warning(self) -> str | None:
        if not self.guidance_nonfinite:
            return None
        return (
            f"layout guidance hit a numerical error ({self.guidance_nonfinite}x NaN/inf) and was "
            "switched off for the objects affected, so they may sit less exactly in their boxes; "
            "🔄 tries another seed"
        )


class FailureView(BaseModel):
    scene: SceneRecord
    job: JobRecord
    round_number: int
    message: str
    retryable: bool = True


class UndoView(BaseModel):
    scene: SceneRecord
    round: RoundRecord  # the round the scene went back to
    result: ResultView | None  # its image, if it was rendered
    overlay_png: bytes  # its plan picture, for when it was not


class QueueEntry(BaseModel):
    position: int  # 0: running
    job_id: int
    user_id: int
    same_server: bool
    prompt: str | None  # hidden for jobs from other servers
    round_number: int | None
    steps: int
    mode: str


class QueueView(BaseModel):
    running: list[QueueEntry]
    waiting: list[QueueEntry]
    eta_per_job_s: float | None


class JobSummary(BaseModel):
    job: JobRecord
    prompt: str
    round_number: int
    thread_id: int | None
    guild_id: int | None
    position: int | None = None


class SettingsChange(BaseModel):
    """What an admin asked /settings to change; ``None`` leaves a setting as it is, ``reset`` first
    forgets every stored choice (the bot's defaults apply again)."""

    model_config = ConfigDict(frozen=True)

    mode: RenderMode | None = None
    steps: int | None = None
    editors: EditorsPolicy | None = None
    safety: SafetyPolicy | None = None
    per_user_cap: int | None = None
    refine: Refine | None = None
    candidates: int | None = None  # seeds each render of a new scene shows, as a grid (1: single)
    allow_channel_id: int | None = None  # add to the channels where /imagine works
    disallow_channel_id: int | None = None  # remove from them
    reset: bool = False


class SettingsView(BaseModel):
    """A server's effective settings: its own choices over the bot's defaults."""

    stored: ServerSettings
    mode: str
    steps: int
    editors: Literal["owner", "everyone"]
    safety: SafetyPolicy
    allowed_channel_ids: list[int]
    per_user_cap: int
    refine: Refine = Refine.OFF
    candidates: int = 1
    updated: datetime | None = None
