"""Database rows as the records the services pass around (:mod:`lmd_bot.scenes.models`)."""

from __future__ import annotations

from datetime import UTC, datetime

from lmd_bot.db.models import Job, Round, Scene
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode
from lmd_bot.scenes.models import JobRecord, JobStatus, RoundKind, RoundRecord, SceneRecord


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without their zone; everything is stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def scene_record(row: Scene) -> SceneRecord:
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


def round_record(row: Round) -> RoundRecord:
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


def job_record(row: Job) -> JobRecord:
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
