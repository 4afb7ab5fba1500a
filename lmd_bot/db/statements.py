"""The SQL of the repository's busiest transactions, built once with bound parameters.

Building a SQLAlchemy statement and its cache key costs more Python than running it on SQLite;
the statements every instruction and every job run (the scene and its rounds, a round with its
job, a job's status, a message's link) are built here once and executed with their values. The
rest of :mod:`lmd_bot.db.repository` builds its statements where it runs them.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.sql import Insert, Select, Update

from lmd_bot.db.models import Job, MessageLink, Round, Scene
from lmd_bot.scenes.models import JobStatus

SCENES, ROUNDS, JOBS, MESSAGES = Scene.__table__, Round.__table__, Job.__table__, MessageLink.__table__
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)

SCENE: Select = select(SCENES).where(SCENES.c.id == bindparam("scene_id"))
# The scene's row lock (PostgreSQL; SQLite has one writer) makes a scene's writes take turns.
SCENE_FOR_UPDATE: Select = SCENE.with_for_update()
ROUND: Select = select(ROUNDS).where(ROUNDS.c.id == bindparam("round_id"))
ROUNDS_OF_SCENE: Select = select(ROUNDS).where(ROUNDS.c.scene_id == bindparam("scene_id"))
# Which rounds a scene has (by id and creation time), without their layouts.
ROUND_STAMPS: Select = select(ROUNDS.c.id, ROUNDS.c.created_at).where(
    ROUNDS.c.scene_id == bindparam("scene_id")
)
PARENT: Select = select(ROUNDS.c.scene_id, ROUNDS.c.candidates).where(ROUNDS.c.id == bindparam("round_id"))
LAST_NUMBER: Select = select(func.coalesce(func.max(ROUNDS.c.number), 0)).where(
    ROUNDS.c.scene_id == bindparam("scene_id")
)
ACTIVE_JOBS_OF_USER: Select = (
    select(func.count())
    .select_from(JOBS)
    .where(JOBS.c.user_id == bindparam("user_id"), JOBS.c.status.in_(ACTIVE))
)
JOB: Select = select(JOBS).where(JOBS.c.id == bindparam("job_id"))

NEW_ROUND: Insert = insert(ROUNDS).returning(ROUNDS.c.id)
NEW_JOB: Insert = insert(JOBS).returning(*JOBS.c)
SET_HEAD: Update = (
    update(SCENES)
    .where(SCENES.c.id == bindparam("scene_id"))
    .values(head_round_id=bindparam("head"), seed=bindparam("new_seed"))
    .returning(*SCENES.c)
)
SET_STATUS_MESSAGE: Update = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"))
    .values(status_message_id=bindparam("message_id"))
    .returning(JOBS.c.scene_id, JOBS.c.round_id)
)
MOVE_LINK: Update = (
    update(MESSAGES)
    .where(MESSAGES.c.message_id == bindparam("link_id"))
    .values({name: bindparam(f"new_{name}") for name in ("scene_id", "round_id", "job_id", "kind")})
)
NEW_LINK: Insert = insert(MESSAGES)


@cache
def update_job(columns: tuple[str, ...], *, only_active: bool = False) -> Update:
    """``UPDATE jobs SET <columns> WHERE id = :job_id [AND still active] RETURNING *``; each
    column's value is bound by its name with a ``new_`` prefix (``new_status``)."""
    where = [JOBS.c.id == bindparam("job_id")]
    if only_active:
        where.append(JOBS.c.status.in_(ACTIVE))
    values = {name: bindparam(f"new_{name}") for name in columns}
    return update(JOBS).where(*where).values(values).returning(*JOBS.c)


def new(values: dict[str, object]) -> dict[str, object]:
    """``values`` bound as the new values of an update built here (``new_`` before each name)."""
    return {f"new_{name}": value for name, value in values.items()}
