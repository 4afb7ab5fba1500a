"""Repository: every query the services make, each in its own short transaction.

Methods take and return the records of :mod:`lmd_bot.scenes.models`. A method that writes
several rows (a scene with its first round, a round with its job) does it in one transaction, so
a failure leaves nothing half-written; a use case makes one such call where it can.

A database that cannot be used right now (locked past its busy timeout, a full disk, a lost
server) raises :class:`~lmd_bot.errors.StorageError`, which says so to the user; the transaction
is rolled back, so nothing is half-written.

Each method's transaction is one plain function of a session, which the
:class:`~lmd_bot.db.engine.Database` runs whole: on SQLite on the event loop itself (the single
writer), so our own writers never wait on each other's locks.

The transactions every instruction and every job runs (a round with its job, the scene's tree,
a job's status, a message's link) are SQL statements on the tables, not ORM loads and flushes:
the ORM's identity map and unit of work cost a few hundred microseconds of the event loop's time
per statement, ten times the statement itself, and every user's next step waits behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lmd_bot.db.engine import Database
from lmd_bot.db.models import GuildConfig, Job, MessageLink, Round, Scene, utcnow
from lmd_bot.db.records import job_record, round_record, scene_record
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

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_SCENES, _ROUNDS, _JOBS, _MESSAGES = Scene.__table__, Round.__table__, Job.__table__, MessageLink.__table__


class NotFoundError(LookupError):
    """A scene, round or job id that is not in the database."""


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


class Repository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _write(self, work: Callable[[Session], T]) -> T:
        """``work`` in one write transaction (see :class:`~lmd_bot.db.engine.Database`)."""
        try:
            return await self._db.write(work)
        except OperationalError as exc:
            raise StorageError(f"database write failed: {exc.orig}") from exc

    async def _read(self, work: Callable[[Session], T]) -> T:
        try:
            return await self._db.read(work)
        except OperationalError as exc:
            raise StorageError(f"database read failed: {exc.orig}") from exc

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

        def work(s: Session) -> tuple[SceneRecord, RoundRecord]:
            scene = Scene(
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
            s.add(scene)
            s.flush()
            first = Round(
                scene_id=scene.id,
                parent_id=None,
                number=1,
                kind=RoundKind.PLAN.value,
                instruction=prompt,
                layout=layout.model_dump(mode="json"),
                seed=seed,
                candidates=candidates,
                notes=list(notes),
                created_at=utcnow(),
            )
            s.add(first)
            s.flush()
            scene.head_round_id = first.id
            return scene_record(scene), round_record(first)

        return await self._write(work)

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

        def work(s: Session) -> tuple[SceneRecord, RoundRecord, JobRecord | None]:
            # The scene's row lock (PostgreSQL) makes two rounds of one scene take turns for a number.
            found = s.execute(select(_SCENES.c.id).where(_SCENES.c.id == scene_id).with_for_update()).first()
            parent = s.execute(
                select(_ROUNDS.c.scene_id, _ROUNDS.c.candidates).where(_ROUNDS.c.id == parent_id)
            ).first()
            if found is None or parent is None or parent.scene_id != scene_id:
                raise NotFoundError(f"round {parent_id} of scene {scene_id}")
            if job is not None:
                self._check_cap(s, job)
            last = select(func.coalesce(func.max(_ROUNDS.c.number), 0)).where(_ROUNDS.c.scene_id == scene_id)
            new_round = RoundRecord(
                id=0,  # given by the insert
                scene_id=scene_id,
                parent_id=parent_id,
                number=s.scalar(last) + 1,
                kind=kind,
                instruction=instruction,
                layout=layout,
                seed=seed,
                candidates=parent.candidates if candidates is None else candidates,
                notes=list(notes),
                created_at=utcnow(),
            )
            values = {
                "scene_id": scene_id,
                "parent_id": parent_id,
                "number": new_round.number,
                "kind": kind.value,
                "instruction": instruction,
                "layout": layout.model_dump(mode="json"),
                "seed": seed,
                "candidates": new_round.candidates,
                "notes": new_round.notes,
                "created_at": new_round.created_at,
            }
            round_id = s.scalar(insert(_ROUNDS).values(values).returning(_ROUNDS.c.id))
            new_round = new_round.model_copy(update={"id": round_id})
            scene = s.execute(
                update(_SCENES)
                .where(_SCENES.c.id == scene_id)
                .values(head_round_id=round_id, seed=seed)
                .returning(*_SCENES.c)
            ).one()
            job_values = None
            if job is not None:
                job_values = self._new_job(scene_id=scene_id, round_id=round_id, seed=seed, job=job)
            elif done is not None:
                job_values = self._finished_job(scene_id=scene_id, round_id=round_id, seed=seed, done=done)
            job_row = None
            if job_values is not None:
                job_row = s.execute(insert(_JOBS).values(job_values).returning(*_JOBS.c)).one()
            return (
                scene_record(scene),
                new_round,
                (job_record(job_row) if job_row is not None else None),
            )

        return await self._write(work)

    async def start_render(
        self,
        *,
        round_id: int,
        job: NewJob,
        seed: int | None = None,
        thread_id: int | None = None,
        plan_message_id: int | None = None,
    ) -> tuple[SceneRecord, RoundRecord, JobRecord]:
        """Everything starting a round's render writes, in one transaction: the thread the plan
        opened (a new scene's home), the plan message's link to the round, and the job (with the
        round's seed unless ``seed``). CapReachedError, and nothing written, at the user's cap."""

        def work(s: Session) -> tuple[SceneRecord, RoundRecord, JobRecord]:
            round_row = s.execute(select(_ROUNDS).where(_ROUNDS.c.id == round_id)).first()
            if round_row is None:
                raise NotFoundError(f"round {round_id}")
            scene_id = round_row.scene_id
            scene = s.execute(select(_SCENES).where(_SCENES.c.id == scene_id).with_for_update()).one()
            self._check_cap(s, job)
            if thread_id is not None and scene.thread_id is None:
                scene = s.execute(
                    update(_SCENES)
                    .where(_SCENES.c.id == scene_id)
                    .values(thread_id=thread_id, plan_message_id=plan_message_id)
                    .returning(*_SCENES.c)
                ).one()
            if plan_message_id is not None:
                self._link(s, plan_message_id, scene_id, round_id, None, MessageKind.PLAN)
            values = self._new_job(
                scene_id=scene_id, round_id=round_id, seed=round_row.seed if seed is None else seed, job=job
            )
            job_row = s.execute(insert(_JOBS).values(values).returning(*_JOBS.c)).one()
            return scene_record(scene), round_record(round_row), job_record(job_row)

        return await self._write(work)

    @staticmethod
    def _check_cap(s: Session, job: NewJob) -> None:
        active = _count_active(s, job.user_id)
        if active >= job.cap:
            raise CapReachedError(job.user_id, active)

    async def set_head(self, scene_id: int, round_id: int, seed: int) -> SceneRecord:
        def work(s: Session) -> SceneRecord:
            row = s.get(Scene, scene_id)
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            row.head_round_id, row.seed = round_id, seed
            s.flush()
            return scene_record(row)

        return await self._write(work)

    async def set_allow_everyone(self, scene_id: int, allow: bool) -> None:
        def work(s: Session) -> None:
            s.execute(update(Scene).where(Scene.id == scene_id).values(allow_everyone=allow))

        await self._write(work)

    async def scene(self, scene_id: int) -> SceneRecord:
        def work(s: Session) -> SceneRecord:
            row = s.execute(select(_SCENES).where(_SCENES.c.id == scene_id)).first()
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            return scene_record(row)

        return await self._read(work)

    async def scene_by_thread(self, thread_id: int) -> SceneRecord | None:
        def work(s: Session) -> SceneRecord | None:
            row = s.scalar(select(Scene).where(Scene.thread_id == thread_id))
            return scene_record(row) if row is not None else None

        return await self._read(work)

    async def round(self, round_id: int) -> RoundRecord:
        def work(s: Session) -> RoundRecord:
            row = s.execute(select(_ROUNDS).where(_ROUNDS.c.id == round_id)).first()
            if row is None:
                raise NotFoundError(f"round {round_id}")
            return round_record(row)

        return await self._read(work)

    async def scene_tree(self, scene_id: int) -> tuple[SceneRecord, dict[int, RoundRecord]]:
        """A scene and all its rounds by id, in one read."""

        def work(s: Session) -> tuple[SceneRecord, dict[int, RoundRecord]]:
            row = s.execute(select(_SCENES).where(_SCENES.c.id == scene_id)).first()
            if row is None:
                raise NotFoundError(f"scene {scene_id}")
            rounds = s.execute(select(_ROUNDS).where(_ROUNDS.c.scene_id == scene_id))
            return scene_record(row), {r.id: round_record(r) for r in rounds}

        return await self._read(work)

    async def rounds(self, scene_id: int) -> dict[int, RoundRecord]:
        def work(s: Session) -> dict[int, RoundRecord]:
            rows = s.scalars(select(Round).where(Round.scene_id == scene_id))
            return {r.id: round_record(r) for r in rows}

        return await self._read(work)

    # --- jobs ----------------------------------------------------------------------------------

    @staticmethod
    def _new_job(*, scene_id: int, round_id: int, seed: int, job: NewJob) -> dict[str, Any]:
        """A queued job's row."""
        return dict(
            scene_id=scene_id,
            round_id=round_id,
            user_id=job.user_id,
            guild_id=job.guild_id,
            status=JobStatus.QUEUED.value,
            mode=job.mode.value,
            steps=job.steps,
            seed=seed,
            attempts=0,
            flagged=False,
            refine=job.refine,
            queued_at=utcnow(),
        )

    @staticmethod
    def _finished_job(*, scene_id: int, round_id: int, seed: int, done: FinishedJob) -> dict[str, Any]:
        """The row of a job created done."""
        now = utcnow()
        return dict(
            scene_id=scene_id,
            round_id=round_id,
            user_id=done.user_id,
            guild_id=done.guild_id,
            status=JobStatus.DONE.value,
            mode=done.mode.value,
            steps=done.steps,
            seed=seed,
            attempts=0,
            image_path=done.image_path,
            overlay_path=done.overlay_path,
            flagged=done.flagged,
            render_seconds=done.render_seconds,
            refine=done.refine,
            queued_at=now,
            started_at=now,
            finished_at=now,
        )

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

        def work(s: Session) -> JobRecord:
            new = NewJob(user_id=user_id, guild_id=guild_id, mode=mode, steps=steps, cap=0)
            row = Job(**self._new_job(scene_id=scene_id, round_id=round_id, seed=seed, job=new))
            s.add(row)
            s.flush()
            return job_record(row)

        return await self._write(work)

    async def start_refine(self, source_id: int, job: NewJob) -> tuple[JobRecord, bool]:
        """A ✨ Refine job for ``source_id``'s image (same round, seed, steps and mode), unless one
        is queued, running or done already: that one is returned instead, so a second press
        queues nothing. ``(job, created)``; CapReachedError, and nothing written, at the cap."""

        def work(s: Session) -> tuple[JobRecord, bool]:
            # The source's row lock makes two presses at once take turns (PostgreSQL).
            source = s.get(Job, source_id, with_for_update=True)
            if source is None:
                raise NotFoundError(f"job {source_id}")
            existing = s.scalar(
                select(Job)
                .where(
                    Job.refine_of == source_id,
                    Job.status.in_([*_ACTIVE, JobStatus.DONE.value]),
                )
                .order_by(Job.id.desc())
                .limit(1)
            )
            if existing is not None:
                return job_record(existing), False
            self._check_cap(s, job)
            row = Job(
                **self._new_job(scene_id=source.scene_id, round_id=source.round_id, seed=source.seed, job=job)
            )
            row.refine, row.refine_of = True, source_id
            s.add(row)
            s.flush()
            return job_record(row), True

        return await self._write(work)

    async def job(self, job_id: int) -> JobRecord:
        def work(s: Session) -> JobRecord:
            row = s.execute(select(_JOBS).where(_JOBS.c.id == job_id)).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            return job_record(row)

        return await self._read(work)

    async def update_job(self, job_id: int, **values: Any) -> JobRecord:
        for key in ("status",):
            if key in values and isinstance(values[key], JobStatus):
                values[key] = values[key].value

        def work(s: Session) -> JobRecord:
            row = s.execute(
                update(_JOBS).where(_JOBS.c.id == job_id).values(**values).returning(*_JOBS.c)
            ).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            return job_record(row)

        return await self._write(work)

    async def finish_job_if_active(self, job_id: int, status: JobStatus, **values: Any) -> JobRecord | None:
        """Set a final status only if the job is still queued or running (events can race a cancel)."""

        def work(s: Session) -> JobRecord | None:
            # One statement: the check and the write cannot be split by a cancel.
            row = s.execute(
                update(_JOBS)
                .where(_JOBS.c.id == job_id, _JOBS.c.status.in_(_ACTIVE))
                .values(status=status.value, finished_at=utcnow(), **values)
                .returning(*_JOBS.c)
            ).first()
            return job_record(row) if row is not None else None

        return await self._write(work)

    async def count_active_jobs(self, user_id: int) -> int:
        return await self._read(lambda s: _count_active(s, user_id))

    async def jobs_with_status(self, *statuses: JobStatus) -> list[JobRecord]:
        def work(s: Session) -> list[JobRecord]:
            rows = s.scalars(
                select(Job)
                .where(Job.status.in_([st.value for st in statuses]))
                .order_by(Job.queued_at, Job.id)
            )
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def active_jobs_of_scene(self, scene_id: int) -> list[JobRecord]:
        def work(s: Session) -> list[JobRecord]:
            rows = s.scalars(
                select(Job).where(Job.scene_id == scene_id, Job.status.in_(_ACTIVE)).order_by(Job.id)
            )
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def recent_jobs_of_user(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        def work(s: Session) -> list[JobRecord]:
            rows = s.scalars(select(Job).where(Job.user_id == user_id).order_by(Job.id.desc()).limit(limit))
            return [job_record(r) for r in rows]

        return await self._read(work)

    async def latest_done_job(self, round_id: int) -> JobRecord | None:
        def work(s: Session) -> JobRecord | None:
            row = s.scalar(
                select(Job)
                .where(Job.round_id == round_id, Job.status == JobStatus.DONE.value)
                .order_by(Job.id.desc())
                .limit(1)
            )
            return job_record(row) if row is not None else None

        return await self._read(work)

    # --- messages ------------------------------------------------------------------------------

    async def link_message(
        self, message_id: int, *, scene_id: int, round_id: int, job_id: int | None, kind: MessageKind
    ) -> None:
        def work(s: Session) -> None:
            self._link(s, message_id, scene_id, round_id, job_id, kind)

        await self._write(work)

    async def remember_status_message(self, job_id: int, message_id: int) -> None:
        """The job's status message is ``message_id`` now: stored on the job, and linked to its
        round (so a reaction or button on it finds the scene), in one transaction."""

        def work(s: Session) -> None:
            row = s.execute(
                update(_JOBS)
                .where(_JOBS.c.id == job_id)
                .values(status_message_id=message_id)
                .returning(_JOBS.c.scene_id, _JOBS.c.round_id)
            ).first()
            if row is None:
                raise NotFoundError(f"job {job_id}")
            self._link(s, message_id, row.scene_id, row.round_id, job_id, MessageKind.STATUS)

        await self._write(work)

    @staticmethod
    def _link(
        s: Session, message_id: int, scene_id: int, round_id: int, job_id: int | None, kind: MessageKind
    ) -> None:
        """Point ``message_id`` at the round (a new link, or a message that shows another now)."""
        values = {"scene_id": scene_id, "round_id": round_id, "job_id": job_id, "kind": kind.value}
        moved = s.execute(update(_MESSAGES).where(_MESSAGES.c.message_id == message_id).values(**values))
        if moved.rowcount == 0:
            s.execute(insert(_MESSAGES).values(message_id=message_id, **values))

    async def message(self, message_id: int) -> MessageRef | None:
        def work(s: Session) -> MessageRef | None:
            row = s.get(MessageLink, message_id)
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
        def work(s: Session) -> ServerSettings:
            row = s.get(GuildConfig, guild_id)
            return ServerSettings.model_validate(row.data) if row is not None else ServerSettings()

        return await self._read(work)

    async def save_server_settings(self, guild_id: int, value: ServerSettings, *, by: int | None) -> None:
        data = value.model_dump(mode="json")

        def work(s: Session) -> None:
            row = s.get(GuildConfig, guild_id)
            if row is None:
                s.add(GuildConfig(guild_id=guild_id, data=data, updated_by=by, updated_at=utcnow()))
            else:
                row.data, row.updated_by, row.updated_at = data, by, utcnow()

        await self._write(work)


def _count_active(s: Session, user_id: int) -> int:
    """The user's queued and running jobs."""
    return s.scalar(
        select(func.count()).select_from(_JOBS).where(_JOBS.c.user_id == user_id, _JOBS.c.status.in_(_ACTIVE))
    )
