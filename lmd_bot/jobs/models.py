"""What travels through the GPU queue: job specs one way, events the other.

Events are pydantic models with a ``kind`` tag so a Redis-backed queue can carry them as JSON
(image bytes as base64); the in-process queue passes the objects as they are.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from lmd_bot.errors import LmdError
from lmd_bot.rendering import RenderRequest
from lmd_bot.selfcheck.report import CheckReport


class QueueFullError(LmdError):
    """The queue (or one user's share of it) is full; nothing was queued."""

    user_message = "The queue is full right now; try again in a few minutes."


class CapReachedError(QueueFullError):
    """One user already has ``active`` queued or running jobs, their share of the queue: nothing
    was queued. Raised by the early check and by the job's own transaction alike."""

    def __init__(self, user_id: int, active: int) -> None:
        images = "image" if active == 1 else "images"
        message = f"You have {active} {images} in the queue already; I'll take more when one finishes."
        super().__init__(f"user {user_id} has {active} active jobs", user_message=message)
        self.user_id = user_id
        self.active = active


class JobSpec(BaseModel):
    """One render to run. ``attempt`` is the try it starts as (a job resumed after its worker died
    starts at 2)."""

    model_config = ConfigDict(frozen=True)

    job_id: int
    user_id: int
    guild_id: int | None = None
    request: RenderRequest
    attempt: int = Field(1, ge=1)


class QueuedJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: int
    user_id: int
    guild_id: int | None = None


class QueueSnapshot(BaseModel):
    """The queue as it stands: running jobs, then the waiting ones in the order they will run."""

    running: list[QueuedJob] = Field(default_factory=list)
    queued: list[QueuedJob] = Field(default_factory=list)
    # False while jobs wait and no worker serves the queue at all (Redis, none started): they
    # start when one does, and no ETA can be given.
    serving: bool = True

    def position(self, job_id: int) -> int | None:
        """1-based place among the waiting jobs, or None if it is not waiting."""
        for i, job in enumerate(self.queued, start=1):
            if job.job_id == job_id:
                return i
        return None


class CancelOutcome(StrEnum):
    REMOVED = "removed"  # it was waiting and is gone
    STOPPING = "stopping"  # it is running; the worker was told to stop (a JobCancelled follows)
    UNKNOWN = "unknown"  # the queue does not have it (finished already, or never queued)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class JobStarted(_Event):
    kind: Literal["started"] = "started"
    job_id: int
    attempt: int
    worker: str = ""


class JobProgress(_Event):
    kind: Literal["progress"] = "progress"
    job_id: int
    step: int
    total: int
    stage: str = "overall"
    preview_png: bytes | None = None


class JobRetrying(_Event):
    kind: Literal["retrying"] = "retrying"
    job_id: int
    attempt: int  # the try about to start
    user_message: str


class JobDone(_Event):
    kind: Literal["done"] = "done"
    job_id: int
    png: bytes
    seconds: float
    stats: dict[str, float] = Field(default_factory=dict)
    flagged: bool = False  # the output safety checker flagged the image (any candidate)
    check: CheckReport | None = None  # the self-check's findings, when one ran
    # A grid's candidates, in the order of the request's seeds (``png`` is the first); empty for
    # a single image.
    candidate_pngs: list[bytes] = Field(default_factory=list)


class JobFailed(_Event):
    kind: Literal["failed"] = "failed"
    job_id: int
    user_message: str
    detail: str = ""
    retryable: bool = True


class JobCancelled(_Event):
    kind: Literal["cancelled"] = "cancelled"
    job_id: int
    reason: str = ""


class QueueChanged(_Event):
    """Jobs were added, started or removed: waiting jobs' positions may have changed."""

    kind: Literal["queue"] = "queue"


JobEvent = Annotated[
    JobStarted | JobProgress | JobRetrying | JobDone | JobFailed | JobCancelled | QueueChanged,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)
