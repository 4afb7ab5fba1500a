"""Repository: every query the services make, each in its own short transaction.

Methods take and return the records of :mod:`lmd_bot.scenes.models`. A method that writes
several rows (a scene with its first round, a round with its job) does it in one transaction, so
a failure leaves nothing half-written; a use case makes one such call where it can.

A database that cannot be used right now (locked past its busy timeout, a full disk, a lost
server) raises :class:`~lmd_bot.errors.StorageError`, which says so to the user; the transaction
is rolled back, so nothing is half-written.

Each method's transaction is one plain function of a connection, which the
:class:`~lmd_bot.db.engine.Database` runs whole: on SQLite on the event loop itself (the single
writer), so our own writers never wait on each other's locks.

Transactions are SQL statements on the tables (:mod:`lmd_bot.db.models` defines them), not ORM
sessions with their loads and flushes: the session's identity map and unit of work cost a few
hundred microseconds of the event loop's time per statement, several times the statement itself,
and on the bot's busiest path (an instruction, a job's start and end) every user's next step
waits behind them. Records are built from the rows a statement returns (``RETURNING``), or from
what was written, never read back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from lmd_bot.db import statements as sql
from lmd_bot.db.engine import Database, unavailable
from lmd_bot.db.models import GuildConfig, utcnow
from lmd_bot.db.records import (
    FinishedJob,
    NewJob,
    aware,
    finished_job_row,
    job_record,
    new_job_row,
    round_record,
    scene_record,
)
from lmd_bot.errors import StorageError
from lmd_bot.jobs.models import CapReachedError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode
from lmd_bot.scenes.models import (
    JobRecord,
    JobStatus,
    MessageKind,
    MessageRef,
    RoundKind,
    RoundRecord,
    SceneRecord,
    ServerSettings,
)

T = TypeVar("T")

# Round records kept for re-reads of their scenes (a few hundred bytes to a few kB each).
ROUNDS_KEPT = 4096

_ACTIVE = sql.ACTIVE
_SCENES, _JOBS, _MESSAGES = sql.SCENES, sql.JOBS, sql.MESSAGES
_GUILDS = GuildConfig.__table__


class NotFoundError(LookupError):
    """A scene, round or job id that is not in the database."""


class Repository:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Rounds never change once written: each instruction re-reads its scene's rounds, and
        # those seen before are taken from here (matched by id and creation time) instead of
        # parsing and validating every layout of the scene's history again.
        self._rounds: dict[int, RoundRecord] = {}

    def _keep(self, rounds: Iterable[RoundRecord]) -> None:
        for round_ in rounds:
            self._rounds[round_.id] = round_
        while len(self._rounds) > ROUNDS_KEPT:  # the oldest first
            del self._rounds[next(iter(self._rounds))]

    async def _write(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one write transaction (see :class:`~lmd_bot.db.engine.Database`)."""
        try:
            return await self._db.write(work)
        except (DBAPIError, OSError) as exc:
            if not unavailable(exc):
                raise
            raise StorageError(f"database write failed: {getattr(exc, 'orig', exc)}") from exc

    async def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            return await self._db.read(work)
        except (DBAPIError, OSError) as exc:
            if not unavailable(exc):
                raise
            raise StorageError(f"database read failed: {getattr(exc, 'orig', exc)}") from exc

    # --- scenes and rounds ---------------------------------------------------------------------

    async def create_scene(
        self,
        *,
        owner_id: int,
        guild_id: int | None,
        channel_id: int | None,
        prompt: str,
        mode: RenderMode,
        steps: int,
        seed: int,
        nsfw: bool,
        layout: SceneLayout,
        notes: Iterable[str] = (),
        candidates: int = 1,
    ) -> tuple[SceneRecord, RoundRecord]:
        """A new scene with its first round (the plan, rendered as ``candidates`` seeds) as its
        head, in one transaction."""

        def work(c: Connection) -> tuple[SceneRecord, RoundRecord]:
            scene_id = c.scalar(
                insert(_SCENES)
                .values(
                    owner_id=owner_id,
                    guild_id=guild_id,
                    channel_id=channel_id,
                    prompt=prompt,
                    mode=mode.value,
                    steps=steps,
                    seed=seed,
                    allow_everyone=False,
                    nsfw=nsfw,
                    created_at=utcnow(),
                )
                .returning(_SCENES.c.id)
            )
            first = _insert_round(
                c,
                scene_id=scene_id,
                parent_id=None,
                number=1,
                kind=RoundKind.PLAN,
                instruction=prompt,
                layout=layout,
                seed=seed,
                candidates=candidates,
                notes=notes,
            )
            scene = c.execute(
                update(_SCENES)
                .where(_SCENES.c.id == scene_id)
                .values(head_round_id=first.id)
                .returning(*_SCENES.c)
            ).one()
            return scene_record(scene), first

        scene, first = await self._write(work)
        self._keep([first])
        return scene, first

    async def add_round(
        self,
        *,
        scene_id: int,
        parent_id: int,
        kind: RoundKind,
        instruction: str,
        layout: SceneLayout,
        seed: int,
        notes: Iterable[str] = (),
        job: NewJob | None = None,
        candidates: int | None = None,
        done: FinishedJob | None = None,
    ) -> tuple[SceneRecord, RoundRecord, JobRecord | None]:
        """A new round under ``parent_id``; it becomes the scene's head and its seed the scene's
        seed. It renders as ``candidates`` seeds (default: as many as its parent: a follow-up or
        reroll of a grid is a grid). With ``job``, its render job is created in the same
        transaction (or, with the user's cap reached, nothing is written: CapReachedError); with
        ``done``, a job that is finished already (a picked candidate's image). Returns the updated
        scene too."""

        def work(c: Connection) -> tuple[SceneRecord, RoundRecord, JobRecord | None]:
            # The scene's row lock (PostgreSQL) makes two rounds of one scene take turns for a number.
            found = c.execute(sql.SCENE_FOR_UPDATE, {"scene_id": scene_id}).first()
            parent = c.execute(sql.PARENT, {"round_id": parent_id}).first()
            if found is None or parent is None or parent.scene_id != scene_id:
                raise NotFoundError(f"round {parent_id} of scene {scene_id}")
            if job is not None:
                self._check_cap(c, job)
            new_round = _insert_round(
                c,
                scene_id=scene_id,
                parent_id=parent_id,
                number=c.scalar(sql.LAST_NUMBER, {"scene_id": scene_id}) + 1,
                kind=kind,
                instruction=instruction,
                layout=layout,
                seed=seed,
                candidates=parent.candidates if candidates is None else candidates,
                notes=notes,
            )
            round_id = new_round.id
            scene = c.execute(sql.SET_HEAD, {"scene_id": scene_id, "head": round_id, "new_seed": seed}).one()
            job_values = None
            if job is not None:
                job_values = new_job_row(scene_id=scene_id, round_id=round_id, seed=seed, job=job)
            elif done is not None:
                job_values = finished_job_row(scene_id=scene_id, round_id=round_id, seed=seed, done=done)
            job_row = None
            if job_values is not None:
                job_row = c.execute(sql.NEW_JOB, job_values).one()
            return (
                scene_record(scene),
                new_round,
                (job_record(job_row) if job_row is not None else None),
            )

        scene, new_round, job_record_ = await self._write(work)
        self._keep([new_round])
        return scene, new_round, job_record_

    async def start_render(
        self,
        *,
        round_id: int,
        job: NewJob,
        thread_id: int | None = None,
        plan_message_id: int | None = None,
    ) -> tuple[SceneRecord, RoundRecord, JobRecord]:
        """Everything starting a round's render writes, in one transaction: the thread the plan
        opened (a new scene's home), the plan message's link to the round, and the job (with the
        round's seed unless ``seed``). CapReachedError, and nothing written, at the user's cap."""

        def work(c: Connection) -> tuple[SceneRecord, RoundRecord, JobRecord]:
            round_row = c.execute(sql.ROUND, {"round_id": round_id}).first()
            if round_row is None:
                raise NotFoundError(f"round {round_id}")
            scene_id = round_row.scene_id
            scene = c.execute(sql.SCENE_FOR_UPDATE, {"scene_id": scene_id}).one()
            self._check_cap(c, job)
            if thread_id is not None and scene.thread_id is None:
                scene = c.execute(
                    update(_SCENES)
                    .where(_SCENES.c.id == scene_id)
                    .values(thread_id=thread_id, plan_message_id=plan_message_id)
                    .returning(*_SCENES.c)
                ).one()
            if plan_message_id is not None:
                self._link(c, plan_message_id, scene_id, round_id, None, MessageKind.PLAN)
            values = new_job_row(scene_id=scene_id, round_id=round_id, seed=round_row.seed, job=job)
            job_row = c.execute(sql.NEW_JOB, values).one()
            return scene_record(scene), round_record(round_row), job_record(job_row)

        return await self._write(work)

    @staticmethod
    def _check_cap(c: Connection, job: NewJob) -> None:
        active = _count_active(c, job.user_id)
        if active >= job.cap:
            raise CapReachedError(job.user_id, active)

    async def set_head(self, scene_id: int, round_id: int, seed: int) -> SceneRecord:
        def work(c: Connection) -> SceneRecord:
            row = c.execute(sql.SET_HEAD, {"scene_id": scene_id, "head": round_id, "new_seed": seed}).first()
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            return scene_record(row)

        return await self._write(work)

    async def set_allow_everyone(self, scene_id: int, allow: bool) -> None:
        def work(c: Connection) -> None:
            c.execute(update(_SCENES).where(_SCENES.c.id == scene_id).values(allow_everyone=allow))

        await self._write(work)

    async def scene(self, scene_id: int) -> SceneRecord:
        def work(c: Connection) -> SceneRecord:
            row = c.execute(sql.SCENE, {"scene_id": scene_id}).first()
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            return scene_record(row)

        return await self._read(work)

    async def scene_by_thread(self, thread_id: int) -> SceneRecord | None:
        def work(c: Connection) -> SceneRecord | None:
            row = c.execute(select(_SCENES).where(_SCENES.c.thread_id == thread_id)).first()
            return scene_record(row) if row is not None else None

        return await self._read(work)

    async def round(self, round_id: int) -> RoundRecord:
        def work(c: Connection) -> RoundRecord:
            row = c.execute(sql.ROUND, {"round_id": round_id}).first()
            if row is None:
                raise NotFoundError(f"round {round_id}")
            return round_record(row)

        return await self._read(work)

    async def scene_tree(self, scene_id: int) -> tuple[SceneRecord, dict[int, RoundRecord]]:
        """A scene and all its rounds by id, in one read."""
        known = self._rounds

        def work(c: Connection) -> tuple[SceneRecord, dict[int, RoundRecord]]:
            row = c.execute(sql.SCENE, {"scene_id": scene_id}).first()
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            rounds = {}
            for round_id, created_at in c.execute(sql.ROUND_STAMPS, {"scene_id": scene_id}):
                seen = known.get(round_id)
                if seen is None or seen.created_at != aware(created_at):
                    rows = c.execute(sql.ROUNDS_OF_SCENE, {"scene_id": scene_id})
                    return scene_record(row), {r.id: round_record(r) for r in rows}
                rounds[round_id] = seen
            return scene_record(row), rounds

        scene, rounds = await self._read(work)
        self._keep(rounds.values())
        return scene, rounds

    async def rounds(self, scene_id: int) -> dict[int, RoundRecord]:
        def work(c: Connection) -> dict[int, RoundRecord]:
            return {r.id: round_record(r) for r in c.execute(sql.ROUNDS_OF_SCENE, {"scene_id": scene_id})}

        return await self._read(work)

    # --- jobs ----------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        scene_id: int,
        round_id: int,
        user_id: int,
        guild_id: int | None,
        mode: RenderMode,
        steps: int,
        seed: int,
    ) -> JobRecord:
        """A queued job, with no cap check (for tools and tests; the services use
        :meth:`start_render`)."""

        def work(c: Connection) -> JobRecord:
            new = NewJob(user_id=user_id, guild_id=guild_id, mode=mode, steps=steps, cap=0)
            values = new_job_row(scene_id=scene_id, round_id=round_id, seed=seed, job=new)
            return job_record(c.execute(sql.NEW_JOB, values).one())

        return await self._write(work)

    async def start_refine(self, source_id: int, job: NewJob) -> tuple[JobRecord, bool]:
        """A ✨ Refine job for ``source_id``'s image (same round, seed, steps and mode), unless one
        is queued, running or done already: that one is returned instead, so a second press
        queues nothing. ``(job, created)``; CapReachedError, and nothing written, at the cap."""
        return await self._job_once(
            source_id,
            job,
            same=lambda source: (_JOBS.c.refine_of == source.id,),
            extra={"refine": True, "refine_of": source_id},
        )

    async def start_retry(self, failed_id: int, job: NewJob) -> tuple[JobRecord, bool]:
        """``failed_id``'s round rendered again with its seed, unless it was queued again (or
        rendered) since: that job is returned instead, so a second press of Retry (a double
        click, or the same failure's Retry pressed later) queues nothing. ``(job, created)``;
        CapReachedError, and nothing written, at the user's cap."""
        return await self._job_once(
            failed_id,
            job,
            same=lambda failed: (
                _JOBS.c.round_id == failed.round_id,
                _JOBS.c.id >= failed.id,
                _JOBS.c.refine_of.is_(None),
            ),
        )

    async def _job_once(
        self, source_id: int, job: NewJob, *, same, extra: dict | None = None
    ) -> tuple[JobRecord, bool]:
        """A new job for ``source_id``'s round and seed, unless a job matching ``same(source)`` is
        queued, running or done: that one, ``created`` False. Buttons pressed twice (a double
        click, two users at once) queue one job."""

        def work(c: Connection) -> tuple[JobRecord, bool]:
            # The source's row lock makes two presses at once take turns (PostgreSQL).
            source = c.execute(select(_JOBS).where(_JOBS.c.id == source_id).with_for_update()).first()
            if source is None:
                raise NotFoundError(f"job {source_id}")
            existing = c.execute(
                select(_JOBS)
                .where(*same(source), _JOBS.c.status.in_([*_ACTIVE, JobStatus.DONE.value]))
                .order_by(_JOBS.c.id.desc())
                .limit(1)
            ).first()
            if existing is not None:
                return job_record(existing), False
            self._check_cap(c, job)
            values = new_job_row(
                scene_id=source.scene_id, round_id=source.round_id, seed=source.seed, job=job
            )
            values.update(extra or {})
            return job_record(c.execute(sql.NEW_JOB, values).one()), True

        return await self._write(work)

    async def job(self, job_id: int) -> JobRecord:
        def work(c: Connection) -> JobRecord:
            row = c.execute(sql.JOB, {"job_id": job_id}).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            return job_record(row)

        return await self._read(work)

    async def update_job(self, job_id: int, **values: Any) -> JobRecord:
        for key in ("status",):
            if key in values and isinstance(values[key], JobStatus):
                values[key] = values[key].value

        def work(c: Connection) -> JobRecord:
            statement = sql.update_job(tuple(values))
            row = c.execute(statement, {"job_id": job_id, **sql.new(values)}).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            return job_record(row)

        return await self._write(work)

    async def finish_job_if_active(self, job_id: int, status: JobStatus, **values: Any) -> JobRecord | None:
        """Set a final status only if the job is still queued or running (events can race a cancel)."""

        def work(c: Connection) -> JobRecord | None:
            # One statement: the check and the write cannot be split by a cancel.
            new = {"status": status.value, "finished_at": utcnow(), **values}
            statement = sql.update_job(tuple(new), only_active=True)
            row = c.execute(statement, {"job_id": job_id, **sql.new(new)}).first()
            return job_record(row) if row is not None else None

        return await self._write(work)

    async def count_active_jobs(self, user_id: int) -> int:
        return await self._read(lambda c: _count_active(c, user_id))

    async def jobs_with_status(self, *statuses: JobStatus) -> list[JobRecord]:
        def work(c: Connection) -> list[JobRecord]:
            rows = c.execute(
                select(_JOBS)
                .where(_JOBS.c.status.in_([st.value for st in statuses]))
                .order_by(_JOBS.c.queued_at, _JOBS.c.id)
            )
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def active_jobs_of_scene(self, scene_id: int) -> list[JobRecord]:
        def work(c: Connection) -> list[JobRecord]:
            rows = c.execute(
                select(_JOBS)
                .where(_JOBS.c.scene_id == scene_id, _JOBS.c.status.in_(_ACTIVE))
                .order_by(_JOBS.c.id)
            )
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def recent_jobs_of_user(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        def work(c: Connection) -> list[JobRecord]:
            rows = c.execute(
                select(_JOBS).where(_JOBS.c.user_id == user_id).order_by(_JOBS.c.id.desc()).limit(limit)
            )
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def latest_done_job(self, round_id: int) -> JobRecord | None:
        def work(c: Connection) -> JobRecord | None:
            row = c.execute(
                select(_JOBS)
                .where(_JOBS.c.round_id == round_id, _JOBS.c.status == JobStatus.DONE.value)
                .order_by(_JOBS.c.id.desc())
                .limit(1)
            ).first()
            return job_record(row) if row is not None else None

        return await self._read(work)

    # --- messages ------------------------------------------------------------------------------

    async def link_message(
        self, message_id: int, *, scene_id: int, round_id: int, job_id: int | None, kind: MessageKind
    ) -> None:
        def work(c: Connection) -> None:
            self._link(c, message_id, scene_id, round_id, job_id, kind)

        await self._write(work)

    async def remember_status_message(self, job_id: int, message_id: int) -> None:
        """The job's status message is ``message_id`` now: stored on the job, and linked to its
        round (so a reaction or button on it finds the scene), in one transaction."""

        def work(c: Connection) -> None:
            row = c.execute(sql.SET_STATUS_MESSAGE, {"job_id": job_id, "message_id": message_id}).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            self._link(c, message_id, row.scene_id, row.round_id, job_id, MessageKind.STATUS)

        await self._write(work)

    @staticmethod
    def _link(
        c: Connection, message_id: int, scene_id: int, round_id: int, job_id: int | None, kind: MessageKind
    ) -> None:
        """Point ``message_id`` at the round (a new link, or a message that shows another now)."""
        values = {"scene_id": scene_id, "round_id": round_id, "job_id": job_id, "kind": kind.value}
        moved = c.execute(sql.MOVE_LINK, {"link_id": message_id, **sql.new(values)})
        if moved.rowcount == 0:
            c.execute(sql.NEW_LINK, {"message_id": message_id, **values})

    async def message(self, message_id: int) -> MessageRef | None:
        def work(c: Connection) -> MessageRef | None:
            row = c.execute(select(_MESSAGES).where(_MESSAGES.c.message_id == message_id)).first()
            if row is None:
                return None
            return MessageRef(
                message_id=row.message_id,
                scene_id=row.scene_id,
                round_id=row.round_id,
                job_id=row.job_id,
                kind=MessageKind(row.kind),
            )

        return await self._read(work)

    # --- server settings -----------------------------------------------------------------------

    async def server_settings(self, guild_id: int) -> ServerSettings:
        def work(c: Connection) -> ServerSettings:
            row = c.execute(select(_GUILDS.c.data).where(_GUILDS.c.guild_id == guild_id)).first()
            return ServerSettings.model_validate(row.data) if row is not None else ServerSettings()

        return await self._read(work)

    async def save_server_settings(self, guild_id: int, value: ServerSettings, *, by: int | None) -> None:
        data = value.model_dump(mode="json")

        def work(c: Connection) -> None:
            values = {"data": data, "updated_by": by, "updated_at": utcnow()}
            changed = c.execute(update(_GUILDS).where(_GUILDS.c.guild_id == guild_id).values(**values))
            if changed.rowcount == 0:
                c.execute(insert(_GUILDS).values(guild_id=guild_id, **values))

        await self._write(work)


def _count_active(c: Connection, user_id: int) -> int:
    """The user's queued and running jobs."""
    return c.scalar(sql.ACTIVE_JOBS_OF_USER, {"user_id": user_id})


def _insert_round(
    c: Connection,
    *,
    scene_id: int,
    parent_id: int | None,
    number: int,
    kind: RoundKind,
    instruction: str,
    layout: SceneLayout,
    seed: int,
    candidates: int,
    notes: Iterable[str],
) -> RoundRecord:
    """A new round's row, and its record (built from what was written, not read back)."""
    values = {
        "scene_id": scene_id,
        "parent_id": parent_id,
        "number": number,
        "kind": kind.value,
        "instruction": instruction,
        "layout": layout.model_dump(mode="json"),
        "seed": seed,
        "candidates": candidates,
        "notes": list(notes),
        "created_at": utcnow(),
    }
    round_id = c.scalar(sql.NEW_ROUND, values)
    return RoundRecord(id=round_id, **{**values, "kind": kind, "layout": layout})
