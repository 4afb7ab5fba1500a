"""Database rows as the records the services pass around (:mod:`lmd_bot.scenes.models`), and
the rows of new jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from lmd_bot.db.models import utcnow
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode
from lmd_bot.scenes.models import JobRecord, JobStatus, RoundKind, RoundRecord, SceneRecord


@dataclass(frozen=True)
class NewJob:
    """The job to create with a round: who asked, and how to render."""

    user_id: int
    guild_id: int | None
    mode: RenderMode
    steps: int
    cap: int  # the user's most active jobs; refused (CapReachedError) at that many
    refine: bool = False  # the render goes through the SDXL refiner


@dataclass(frozen=True)
class FinishedJob:
    """A job created done, its image on disk already (a candidate picked from a grid)."""

    user_id: int
    guild_id: int | None
    mode: RenderMode
    steps: int
    image_path: str | None
    overlay_path: str | None
    flagged: bool
    render_seconds: float | None
    refine: bool  # the image was refined (SDXL) when it was rendered


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without their zone; everything is stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def scene_record(row: Row) -> SceneRecord:
    return SceneRecord(
        id=row.id,
        owner_id=row.owner_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        thread_id=row.thread_id,
        plan_message_id=row.plan_message_id,
        prompt=row.prompt,
        mode=RenderMode(row.mode),
        steps=row.steps,
        seed=row.seed,
        allow_everyone=row.allow_everyone,
        nsfw=row.nsfw,
        head_round_id=row.head_round_id,
        created_at=aware(row.created_at),
    )


def round_record(row: Row) -> RoundRecord:
    return RoundRecord(
        id=row.id,
        scene_id=row.scene_id,
        parent_id=row.parent_id,
        number=row.number,
        kind=RoundKind(row.kind),
        instruction=row.instruction,
        layout=SceneLayout.model_validate(row.layout),
        seed=row.seed,
        candidates=row.candidates,
        notes=list(row.notes or []),
        created_at=aware(row.created_at),
    )


def job_record(row: Row) -> JobRecord:
    return JobRecord(
        id=row.id,
        scene_id=row.scene_id,
        round_id=row.round_id,
        user_id=row.user_id,
        guild_id=row.guild_id,
        status=JobStatus(row.status),
        mode=RenderMode(row.mode),
        steps=row.steps,
        seed=row.seed,
        attempts=row.attempts,
        error=row.error,
        status_message_id=row.status_message_id,
        image_path=row.image_path,
        overlay_path=row.overlay_path,
        flagged=row.flagged,
        render_seconds=row.render_seconds,
        refine=row.refine,
        refine_of=row.refine_of,
        queued_at=aware(row.queued_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
    )


def _job_row(*, scene_id: int, round_id: int, seed: int, job: NewJob | FinishedJob) -> dict[str, Any]:
    """The columns every new job row has, from what asked for it."""
    return dict(
        scene_id=scene_id,
        round_id=round_id,
        user_id=job.user_id,
        guild_id=job.guild_id,
        mode=job.mode.value,
        steps=job.steps,
        seed=seed,
        attempts=0,
        refine=job.refine,
    )


def new_job_row(*, scene_id: int, round_id: int, seed: int, job: NewJob) -> dict[str, Any]:
    """A queued job's row."""
    row = _job_row(scene_id=scene_id, round_id=round_id, seed=seed, job=job)
    return {**row, "status": JobStatus.QUEUED.value, "flagged": False, "queued_at": utcnow()}


def finished_job_row(*, scene_id: int, round_id: int, seed: int, done: FinishedJob) -> dict[str, Any]:
    """The row of a job created done."""
    now = utcnow()
    return {
        **_job_row(scene_id=scene_id, round_id=round_id, seed=seed, job=done),
        "status": JobStatus.DONE.value,
        "image_path": done.image_path,
        "overlay_path": done.overlay_path,
        "flagged": done.flagged,
        "render_seconds": done.render_seconds,
        "queued_at": now,
        "started_at": now,
        "finished_at": now,
    }
