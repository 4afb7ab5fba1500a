"""The scene service: every use case of the bot, for any adapter (Discord, the terminal, tests).

A scene is a tree of rounds (plan, revisions, rerolls) stored in the database; each render is a
job in the GPU queue. The service plans with the planner, keeps the database as the record of
everything, feeds the queue, and turns queue events into status updates, results and failures
for the adapter's :class:`~lmd_bot.services.notifier.Notifier`, at most one edit per message per
``discord.status_edit_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lmd_bot.config import Settings
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.errors import PlannerError
from lmd_bot.guard import Guard
from lmd_bot.jobs.base import JobQueue
from lmd_bot.jobs.models import (
    CancelOutcome,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSpec,
    JobStarted,
    QueueChanged,
    QueueFullError,
    QueueSnapshot,
)
from lmd_bot.layout.schema import clean_text
from lmd_bot.planner.base import Planner
from lmd_bot.rendering import RenderMode, RenderRequest
from lmd_bot.scenes.diff import describe_changes
from lmd_bot.scenes.models import (
    JobRecord,
    JobStatus,
    MessageKind,
    RoundKind,
    RoundRecord,
    SceneRecord,
    ServerSettings,
)
from lmd_bot.scenes.tree import branch_path, planner_history
from lmd_bot.services.errors import (
    EmptyTextError,
    NotAdminError,
    NothingToUndoError,
    NotOwnerError,
    SceneNotFoundError,
    TextTooLongError,
)
from lmd_bot.services.images import ImageStore
from lmd_bot.services.notifier import DestinationGoneError, Notifier
from lmd_bot.services.tasks import TaskSet
from lmd_bot.services.throttle import EditThrottle
from lmd_bot.services.views import (
    Actor,
    FailureView,
    JobSummary,
    PlanView,
    QueueEntry,
    QueueView,
    ReplyView,
    ResultView,
    SettingsView,
    StatusView,
    UndoView,
)

log = logging.getLogger(__name__)

UNDO_WORDS = frozenset({"undo", "/undo", "go back", "back"})
# How much the running-average render time follows the newest job.
_ETA_WEIGHT = 0.3


@dataclass
class _Live:
    """A queued or running job the service is following."""

    job: JobRecord
    scene: SceneRecord
    round: RoundRecord
    queued_at: float  # monotonic
    position: int | None = None


class SceneService:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repository,
        planner: Planner,
        queue: JobQueue,
        guard: Guard,
        images: ImageStore,
        new_seed: Callable[[], int] = lambda: secrets.randbelow(2**32),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.planner = planner
        self.queue = queue
        self.guard = guard
        self.images = images
        self._new_seed = new_seed
        self._clock = clock
        self._notifier: Notifier | None = None
        self._tasks = TaskSet()
        self._throttle = EditThrottle(
            settings.discord.status_edit_interval_s, self._deliver, self._tasks, clock
        )
        self._live: dict[int, _Live] = {}
        self._server_cache: dict[int, ServerSettings] = {}
        self._scene_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._user_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._avg_render_s: float | None = None
        self._positions_task: asyncio.Task[None] | None = None
        self._positions_dirty = False
        self._pump: asyncio.Task[None] | None = None
        self._pump_idle = False
        self.events_handled = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def attach(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def start(self) -> None:
        """Start the queue, follow its events, and pick up the jobs a previous run left."""
        await self.queue.start()
        self._pump = asyncio.create_task(self._pump_events(), name="lmd-events")
        await self._resume()

    async def shutdown(self) -> None:
        """Stop taking jobs, let the running one finish (or requeue it), deliver pending updates."""
        aborted = await self.queue.close(self.settings.queue.shutdown_grace_s)
        # The pump handles what the queue emitted before it closed; once it waits on an empty
        # queue (a cancel-safe wait) it is stopped.
        if self._pump is not None:
            while not self._pump_idle and not self._pump.done():
                await asyncio.sleep(0.01)
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for job_id in aborted:
            job = await self.repo.job(job_id)
            if job.status == JobStatus.RUNNING:
                # Not the job's fault: the next start runs it again without counting this try.
                await self.repo.update_job(job_id, status=JobStatus.QUEUED, attempts=max(0, job.attempts - 1))
                log.info("job %s requeued for the next start", job_id)
        try:
            await asyncio.wait_for(self._throttle.drain(), timeout=10)
        except TimeoutError:
            log.warning("some status updates were not delivered before shutdown")
        await self._tasks.close()

    # --- /imagine ------------------------------------------------------------------------------

    async def check_imagine(self, actor: Actor, prompt: str) -> None:
        """Fast checks (no planner call, no writes) an adapter can run before acknowledging."""
        server = await self._server(actor.guild_id)
        self.guard.check_place(guild_id=actor.guild_id, channel_id=actor.channel_id, server=server)
        self.guard.text.check(self._user_text(prompt, "prompt"))
        self.guard.rate.check(actor.user_id)

    async def imagine(
        self,
        actor: Actor,
        prompt: str,
        *,
        mode: RenderMode | None = None,
        seed: int | None = None,
        steps: int | None = None,
    ) -> PlanView | ReplyView:
        """Plan a new scene. On a layout, the scene and its first round are stored; render it with
        :meth:`start_render` once the plan is shown (and the thread exists)."""
        text = self._user_text(prompt, "prompt")
        server = await self._server(actor.guild_id)
        self.guard.check_place(guild_id=actor.guild_id, channel_id=actor.channel_id, server=server)
        self.guard.text.check(text)
        self.guard.rate.hit(actor.user_id)
        await self._check_cap(actor.user_id, server)
        log.info("imagine user=%s guild=%s prompt=%r", actor.user_id, actor.guild_id, text)
        result = await self.planner.plan(text)
        if result.layout is None:
            return ReplyView(text=result.reply or PlannerError.user_message)
        layout = result.layout
        self.guard.text.check_layout(layout)
        scene, first = await self.repo.create_scene(
            owner_id=actor.user_id,
            guild_id=actor.guild_id,
            channel_id=actor.channel_id,
            prompt=text,
            mode=mode or (server.mode if server else None) or RenderMode(self.settings.diffusion.mode),
            steps=steps or (server.steps if server else None) or self.settings.diffusion.steps,
            seed=seed if seed is not None else self._new_seed(),
            nsfw=actor.nsfw,
            layout=layout,
            notes=result.notes,
        )
        return PlanView(
            scene=scene, round=first, overlay_png=await self.images.plan_picture(layout), notes=result.notes
        )

    async def start_render(
        self,
        actor: Actor,
        round_id: int,
        *,
        thread_id: int | None = None,
        plan_message_id: int | None = None,
    ) -> JobRecord:
        """Queue the render of a planned round; records where its plan was shown. For a new scene,
        ``thread_id`` is the thread opened from the plan, which becomes the scene's home."""
        round_ = await self._round(round_id)
        scene = await self._scene(round_.scene_id)
        if thread_id is not None and scene.thread_id is None:
            await self.repo.bind_thread(scene.id, thread_id=thread_id, plan_message_id=plan_message_id)
            scene = await self.repo.scene(scene.id)
        if plan_message_id is not None:
            await self.repo.link_message(
                plan_message_id, scene_id=scene.id, round_id=round_.id, job_id=None, kind=MessageKind.PLAN
            )
        return await self._enqueue(actor, scene, round_)

    # --- follow-up rounds ----------------------------------------------------------------------

    async def scene_for_thread(self, thread_id: int) -> SceneRecord | None:
        return await self.repo.scene_by_thread(thread_id)

    async def may_edit(self, actor: Actor, scene: SceneRecord) -> bool:
        if actor.user_id == scene.owner_id or actor.is_admin or scene.allow_everyone:
            return True
        return self.guard.editors(await self._server(scene.guild_id)) == "everyone"

    async def instruct(
        self, actor: Actor, scene_id: int, instruction: str, *, base_round_id: int | None = None
    ) -> PlanView | ReplyView | UndoView:
        """Apply an instruction to the scene's current round (or ``base_round_id``, branching from
        it). A layout becomes a new round, the scene's head; render it with :meth:`start_render`."""
        text = self._user_text(instruction, "instruction")
        scene = await self._scene(scene_id)
        await self._ensure_editor(actor, scene)
        if text.casefold().strip(" .!") in UNDO_WORDS:
            return await self.undo(actor, scene_id, from_round_id=base_round_id)
        server = await self._server(scene.guild_id)
        self.guard.text.check(text, what="instruction")
        self.guard.rate.hit(actor.user_id)
        await self._check_cap(actor.user_id, server)
        async with self._lock(self._scene_locks, scene_id):
            scene = await self._scene(scene_id)
            base_id = base_round_id or scene.head_round_id
            rounds = await self.repo.rounds(scene_id)
            if base_id not in rounds:
                raise SceneNotFoundError(f"round {base_id} not in scene {scene_id}")
            path = branch_path(rounds, base_id)
            base = path[-1]
            log.info("instruct scene=%s round=%s user=%s text=%r", scene_id, base.number, actor.user_id, text)
            result = await self.planner.revise(planner_history(path), text)
            if result.layout is None:
                return ReplyView(scene=scene, text=result.reply or PlannerError.user_message)
            layout = result.layout
            self.guard.text.check_layout(layout)
            new_round, _ = await self.repo.add_round(
                scene_id=scene_id,
                parent_id=base.id,
                kind=RoundKind.REVISE,
                instruction=text,
                layout=layout,
                seed=base.seed,
                notes=result.notes,
            )
            scene = await self.repo.scene(scene_id)
        return PlanView(
            scene=scene,
            round=new_round,
            overlay_png=await self.images.plan_picture(layout),
            changes=describe_changes(base.layout, layout),
            notes=result.notes,
        )

    async def reroll(self, actor: Actor, round_id: int) -> JobRecord:
        """Render ``round_id``'s layout with a new seed, as a new round branched from it."""
        round_ = await self._round(round_id)
        scene = await self._scene(round_.scene_id)
        await self._ensure_editor(actor, scene)
        server = await self._server(scene.guild_id)
        self.guard.rate.hit(actor.user_id)
        async with self._lock(self._scene_locks, scene.id), self._lock(self._user_locks, actor.user_id):
            await self._check_cap(actor.user_id, server)
            seed = self._new_seed()
            new_round, job = await self.repo.add_round(
                scene_id=scene.id,
                parent_id=round_.id,
                kind=RoundKind.REROLL,
                instruction=f"reroll of round {round_.number}",
                layout=round_.layout,
                seed=seed,
                job={
                    "user_id": actor.user_id,
                    "guild_id": actor.guild_id,
                    "mode": scene.mode,
                    "steps": scene.steps,
                },
            )
            scene = await self.repo.scene(scene.id)
            log.info(
                "reroll scene=%s round=%s -> round %s seed=%s",
                scene.id,
                round_.number,
                new_round.number,
                seed,
            )
            return await self._submit(scene, new_round, job)

    async def reroll_message(self, actor: Actor, message_id: int) -> JobRecord | None:
        """A 🔄 on a message: reroll the round it shows; None if the message shows no round."""
        ref = await self.repo.message(message_id)
        if ref is None:
            return None
        return await self.reroll(actor, ref.round_id)

    async def undo(self, actor: Actor, scene_id: int, *, from_round_id: int | None = None) -> UndoView:
        """Go back to the parent of the current round (or of ``from_round_id``)."""
        scene = await self._scene(scene_id)
        await self._ensure_editor(actor, scene)
        async with self._lock(self._scene_locks, scene_id):
            scene = await self._scene(scene_id)
            current = await self._round(from_round_id or scene.head_round_id)
            if current.scene_id != scene_id:
                raise SceneNotFoundError(f"round {current.id} not in scene {scene_id}")
            if current.parent_id is None:
                raise NothingToUndoError(f"round {current.id} has no parent")
            target = await self._round(current.parent_id)
            await self.repo.set_head(scene_id, target.id, target.seed)
            scene = await self.repo.scene(scene_id)
        log.info("undo scene=%s -> round %s", scene_id, target.number)
        return UndoView(
            scene=scene,
            round=target,
            result=await self.shown_result(target.id),
            overlay_png=await self.images.plan_picture(target.layout),
        )

    async def shown_result(self, round_id: int) -> ResultView | None:
        """The newest finished render of a round, read back from disk (for showing it again)."""
        job = await self.repo.latest_done_job(round_id)
        if job is None:
            return None
        image = await self.images.load(job.image_path)
        if image is None and not job.flagged:
            return None
        round_ = await self._round(round_id)
        scene = await self._scene(round_.scene_id)
        policy = self.guard.safety(await self._server(scene.guild_id), nsfw_channel=scene.nsfw)
        withheld = job.flagged and policy == "withhold"
        return ResultView(
            scene=scene,
            round=round_,
            job=job,
            image_png=None if withheld else image,
            overlay_png=None if withheld else await self.images.load(job.overlay_path),
            spoiler=job.flagged and policy == "spoiler",
            withheld=withheld,
            render_s=job.render_seconds,
            reshown=True,
        )

    async def note_shown(
        self, message_id: int, round_: RoundRecord, job_id: int | None, kind: MessageKind
    ) -> None:
        """Record that a message shows a round, so reactions and buttons on it find the scene."""
        await self.repo.link_message(
            message_id, scene_id=round_.scene_id, round_id=round_.id, job_id=job_id, kind=kind
        )

    async def layout_json(self, round_id: int) -> str:
        round_ = await self._round(round_id)
        return round_.layout.model_dump_json(indent=2)

    async def round_record(self, round_id: int) -> RoundRecord:
        return await self._round(round_id)

    async def share(self, actor: Actor, scene_id: int, allow: bool) -> None:
        """Let everyone in the thread edit the scene (or only its owner again)."""
        scene = await self._scene(scene_id)
        if actor.user_id != scene.owner_id and not actor.is_admin:
            raise NotOwnerError("only the owner shares a scene")
        await self.repo.set_allow_everyone(scene_id, allow)

    # --- jobs: retry, cancel, thread gone ------------------------------------------------------

    async def retry(self, actor: Actor, job_id: int) -> JobRecord:
        """Queue a failed or cancelled job's round again, with the same seed."""
        old = await self._job(job_id)
        scene = await self._scene(old.scene_id)
        await self._ensure_editor(actor, scene)
        if old.status.active:
            return old
        self.guard.rate.hit(actor.user_id)
        round_ = await self._round(old.round_id)
        return await self._enqueue(actor, scene, round_, seed=old.seed)

    async def cancel(self, actor: Actor, job_id: int) -> str:
        job = await self._job(job_id)
        if actor.user_id != job.user_id and not actor.is_admin:
            raise NotOwnerError(
                "not the job's owner", user_message="Only who queued this image can cancel it."
            )
        if not job.status.active:
            return "That job has already finished."
        outcome = await self.queue.cancel(job_id)
        if outcome == CancelOutcome.STOPPING:
            return "Stopping the render…"
        if outcome == CancelOutcome.REMOVED or job.status == JobStatus.QUEUED:
            await self._end_cancelled(job_id, "cancelled by its owner")
        return "Cancelled."

    async def scene_closed(self, thread_id: int) -> int:
        """The thread was deleted or archived: cancel its jobs. Returns how many were active."""
        scene = await self.repo.scene_by_thread(thread_id)
        if scene is None:
            return 0
        return await self._cancel_scene_jobs(scene.id, "the thread was closed")

    async def _cancel_scene_jobs(self, scene_id: int, reason: str) -> int:
        jobs = await self.repo.active_jobs_of_scene(scene_id)
        for job in jobs:
            outcome = await self.queue.cancel(job.id)
            if outcome != CancelOutcome.STOPPING:
                await self._end_cancelled(job.id, reason, notify=False)
        if jobs:
            log.info("scene %s: %d job(s) cancelled (%s)", scene_id, len(jobs), reason)
        return len(jobs)

    # --- /queue, /info, /settings --------------------------------------------------------------

    async def queue_view(self, actor: Actor) -> QueueView:
        snap = await self.queue.snapshot()

        async def entry(position: int, job_id: int) -> QueueEntry | None:
            try:
                live = await self._live_job(job_id)
            except NotFoundError:
                return None
            same = live.scene.guild_id == actor.guild_id
            return QueueEntry(
                position=position,
                job_id=job_id,
                user_id=live.job.user_id,
                same_server=same,
                prompt=live.scene.prompt if same else None,
                round_number=live.round.number if same else None,
                steps=live.job.steps,
                mode=live.job.mode.value,
            )

        running = [e for j in snap.running if (e := await entry(0, j.job_id))]
        waiting = [e for i, j in enumerate(snap.queued, 1) if (e := await entry(i, j.job_id))]
        return QueueView(running=running, waiting=waiting, eta_per_job_s=self._avg_render_s)

    async def info(self, actor: Actor, limit: int = 10) -> list[JobSummary]:
        snap = await self.queue.snapshot()
        out = []
        for job in await self.repo.recent_jobs_of_user(actor.user_id, limit):
            scene = await self.repo.scene(job.scene_id)
            round_ = await self.repo.round(job.round_id)
            out.append(
                JobSummary(
                    job=job,
                    prompt=scene.prompt,
                    round_number=round_.number,
                    thread_id=scene.thread_id,
                    guild_id=scene.guild_id,
                    position=snap.position(job.id),
                )
            )
        return out

    async def server_settings(self, guild_id: int) -> SettingsView:
        stored = await self._server(guild_id) or ServerSettings()
        return SettingsView(
            stored=stored,
            mode=(stored.mode or RenderMode(self.settings.diffusion.mode)).value,
            steps=stored.steps or self.settings.diffusion.steps,
            editors=self.guard.editors(stored),
            safety=stored.safety or self.settings.guard.safety_policy,
            allowed_channel_ids=stored.allowed_channel_ids or list(self.settings.discord.allowed_channel_ids),
            per_user_cap=stored.per_user_cap or self.settings.queue.per_user_cap,
        )

    async def update_server_settings(self, actor: Actor, **changes: Any) -> SettingsView:
        """Admins only. ``changes`` are :class:`ServerSettings` fields; ``None`` resets one to the
        bot's default."""
        if not actor.is_admin or actor.guild_id is None:
            raise NotAdminError("not an admin")
        current = await self._server(actor.guild_id) or ServerSettings()
        updated = ServerSettings.model_validate({**current.model_dump(), **changes})
        await self.repo.save_server_settings(actor.guild_id, updated, by=actor.user_id)
        self._server_cache[actor.guild_id] = updated
        log.info("server %s settings changed by %s: %s", actor.guild_id, actor.user_id, changes)
        return await self.server_settings(actor.guild_id)

    # --- internals: checks ---------------------------------------------------------------------

    def _user_text(self, text: str, what: str) -> str:
        cleaned = clean_text(text)
        if not cleaned:
            raise EmptyTextError(what)
        limit = self.settings.layout.max_user_text_chars
        if len(cleaned) > limit:
            raise TextTooLongError(len(cleaned), limit, what)
        return cleaned

    async def _ensure_editor(self, actor: Actor, scene: SceneRecord) -> None:
        if not await self.may_edit(actor, scene):
            raise NotOwnerError(f"user {actor.user_id} may not edit scene {scene.id}")

    async def _check_cap(self, user_id: int, server: ServerSettings | None) -> None:
        cap = (server.per_user_cap if server else None) or self.settings.queue.per_user_cap
        active = await self.repo.count_active_jobs(user_id)
        if active >= cap:
            images = "image" if active == 1 else "images"
            raise QueueFullError(
                f"user {user_id} has {active} active jobs",
                user_message=(
                    f"You have {active} {images} in the queue already; I'll take more when one finishes."
                ),
            )

    async def _server(self, guild_id: int | None) -> ServerSettings | None:
        if guild_id is None:
            return None
        if guild_id not in self._server_cache:
            self._server_cache[guild_id] = await self.repo.server_settings(guild_id)
        return self._server_cache[guild_id]

    @staticmethod
    def _lock(locks: weakref.WeakValueDictionary[int, asyncio.Lock], key: int) -> asyncio.Lock:
        lock = locks.get(key)
        if lock is None:
            lock = locks[key] = asyncio.Lock()
        return lock

    async def _scene(self, scene_id: int | None) -> SceneRecord:
        try:
            return await self.repo.scene(scene_id)  # type: ignore[arg-type]
        except NotFoundError:
            raise SceneNotFoundError(f"scene {scene_id}") from None

    async def _round(self, round_id: int | None) -> RoundRecord:
        try:
            return await self.repo.round(round_id)  # type: ignore[arg-type]
        except NotFoundError:
            raise SceneNotFoundError(f"round {round_id}") from None

    async def _job(self, job_id: int) -> JobRecord:
        try:
            return await self.repo.job(job_id)
        except NotFoundError:
            raise SceneNotFoundError(
                f"job {job_id}", user_message="I can't find that job any more."
            ) from None

    # --- internals: queueing -------------------------------------------------------------------

    async def _enqueue(
        self, actor: Actor, scene: SceneRecord, round_: RoundRecord, seed: int | None = None
    ) -> JobRecord:
        server = await self._server(scene.guild_id)
        async with self._lock(self._user_locks, actor.user_id):
            await self._check_cap(actor.user_id, server)
            job = await self.repo.create_job(
                scene_id=scene.id,
                round_id=round_.id,
                user_id=actor.user_id,
                guild_id=actor.guild_id,
                mode=scene.mode,
                steps=scene.steps,
                seed=round_.seed if seed is None else seed,
            )
            return await self._submit(scene, round_, job)

    def _spec(self, scene: SceneRecord, round_: RoundRecord, job: JobRecord, attempt: int = 1) -> JobSpec:
        request = RenderRequest(
            layout=round_.layout,
            prompt=scene.prompt,
            mode=job.mode,
            seed=job.seed,
            steps=job.steps,
            guidance_scale=self.settings.diffusion.guidance_scale,
        )
        return JobSpec(
            job_id=job.id, user_id=job.user_id, guild_id=job.guild_id, request=request, attempt=attempt
        )

    async def _submit(
        self, scene: SceneRecord, round_: RoundRecord, job: JobRecord, attempt: int = 1
    ) -> JobRecord:
        self._live[job.id] = _Live(job=job, scene=scene, round=round_, queued_at=self._clock())
        try:
            await self.queue.submit(self._spec(scene, round_, job, attempt))
        except Exception as exc:
            del self._live[job.id]
            await self.repo.finish_job_if_active(
                job.id, JobStatus.FAILED, error=getattr(exc, "user_message", "queue")
            )
            raise
        log.info("job %s queued (scene %s round %s seed %s)", job.id, scene.id, round_.number, job.seed)
        self._refresh_positions_soon()
        return job

    async def _resume(self) -> None:
        known = await self.queue.known_jobs()
        max_attempts = self.settings.queue.max_attempts
        for job in await self.repo.jobs_with_status(JobStatus.RUNNING, JobStatus.QUEUED):
            try:
                scene, round_ = await self.repo.scene(job.scene_id), await self.repo.round(job.round_id)
            except NotFoundError:
                continue
            if job.id in known:
                self._live[job.id] = _Live(job=job, scene=scene, round=round_, queued_at=self._clock())
                continue
            attempt = 1
            if job.status == JobStatus.RUNNING:
                if job.attempts >= max_attempts:
                    job = await self.repo.update_job(
                        job.id,
                        status=JobStatus.FAILED,
                        finished_at=datetime.now(UTC),
                        error="interrupted by a restart",
                    )
                    message = (
                        "The bot restarted while rendering this, and it had been tried before; giving up."
                    )
                    self._throttle.push(
                        job.id,
                        FailureView(scene=scene, job=job, round_number=round_.number, message=message),
                        final=True,
                    )
                    continue
                attempt = job.attempts + 1
                job = await self.repo.update_job(job.id, status=JobStatus.QUEUED)
            try:
                await self._submit(scene, round_, job, attempt)
            except QueueFullError as exc:
                log.warning("job %s could not be resumed: %s", job.id, exc)
            else:
                if attempt > 1:
                    self._push_status(
                        self._live[job.id],
                        "retrying",
                        note="The bot restarted while this was rendering; trying again.",
                    )
        log.info("resumed %d job(s)", len(self._live))

    # --- internals: queue events ---------------------------------------------------------------

    async def _pump_events(self) -> None:
        while True:
            self._pump_idle = True
            event = await self.queue.next_event()
            self._pump_idle = False
            try:
                await self._on_event(event)
            except Exception:
                log.exception("handling %s failed", event.kind)
            self.events_handled += 1

    async def _live_job(self, job_id: int) -> _Live:
        live = self._live.get(job_id)
        if live is None:
            job = await self.repo.job(job_id)
            live = _Live(
                job=job,
                scene=await self.repo.scene(job.scene_id),
                round=await self.repo.round(job.round_id),
                queued_at=self._clock(),
            )
            if job.status.active:
                self._live[job_id] = live
        return live

    async def _on_event(self, event: JobEvent) -> None:
        if isinstance(event, QueueChanged):
            self._refresh_positions_soon()
            return
        live = await self._live_job(event.job_id)
        if isinstance(event, JobStarted):
            live.job = await self.repo.update_job(
                event.job_id, status=JobStatus.RUNNING, attempts=event.attempt, started_at=datetime.now(UTC)
            )
            live.position = None
            self._push_status(live, "running", step=0, total=live.job.steps)
        elif isinstance(event, JobProgress):
            self._push_status(live, "running", step=event.step, total=event.total, preview=event.preview_png)
        elif isinstance(event, JobRetrying):
            self._push_status(live, "retrying", note=event.user_message)
        elif isinstance(event, JobDone):
            await self._on_done(live, event)
        elif isinstance(event, JobFailed):
            self._live.pop(event.job_id, None)
            log.warning("job %s failed: %s (%s)", event.job_id, event.user_message, event.detail)
            job = await self.repo.finish_job_if_active(
                event.job_id, JobStatus.FAILED, error=event.user_message
            )
            if job is not None:
                view = FailureView(
                    scene=live.scene,
                    job=job,
                    round_number=live.round.number,
                    message=event.user_message,
                    retryable=event.retryable,
                )
                self._throttle.push(job.id, view, final=True)
        elif isinstance(event, JobCancelled):
            await self._end_cancelled(event.job_id, event.reason or "cancelled")

    async def _on_done(self, live: _Live, event: JobDone) -> None:
        self._live.pop(event.job_id, None)
        policy = self.guard.safety(await self._server(live.scene.guild_id), nsfw_channel=live.scene.nsfw)
        withheld = event.flagged and policy == "withhold"
        overlay = None
        image_path = overlay_path = None
        if not withheld:
            overlay = await self.images.overlay(live.round.layout, event.png)
            image_path, overlay_path = await self.images.save(
                scene_id=live.scene.id, job_id=event.job_id, png=event.png, overlay_png=overlay
            )
        job = await self.repo.finish_job_if_active(
            event.job_id,
            JobStatus.DONE,
            image_path=image_path,
            overlay_path=overlay_path,
            flagged=event.flagged,
            render_seconds=event.seconds,
        )
        if job is None:
            return  # cancelled meanwhile: its status already says so
        self._avg_render_s = (
            event.seconds
            if self._avg_render_s is None
            else (1 - _ETA_WEIGHT) * self._avg_render_s + _ETA_WEIGHT * event.seconds
        )
        if event.flagged:
            log.warning("job %s flagged by the safety checker (policy %s)", job.id, policy)
        view = ResultView(
            scene=live.scene,
            round=live.round,
            job=job,
            image_png=None if withheld else event.png,
            overlay_png=overlay,
            spoiler=event.flagged and policy == "spoiler",
            withheld=withheld,
            render_s=event.seconds,
            total_s=self._clock() - live.queued_at,
        )
        self._throttle.push(job.id, view, final=True)

    async def _end_cancelled(self, job_id: int, reason: str, *, notify: bool = True) -> None:
        live = self._live.pop(job_id, None)
        job = await self.repo.finish_job_if_active(job_id, JobStatus.CANCELLED, error=reason)
        if job is None or not notify:
            self._throttle.push(job_id, None, final=True)  # nothing more to show for it
            return
        live = live or await self._live_job(job_id)
        self._throttle.push(
            job_id,
            StatusView(
                scene=live.scene, job=job, round_number=live.round.number, state="cancelled", note=reason
            ),
            final=True,
        )
        self._refresh_positions_soon()

    def _push_status(
        self,
        live: _Live,
        state: str,
        *,
        step: int | None = None,
        total: int | None = None,
        preview: bytes | None = None,
        note: str | None = None,
        position: int | None = None,
        waiting: int | None = None,
        eta: float | None = None,
    ) -> None:
        view = StatusView(
            scene=live.scene,
            job=live.job,
            round_number=live.round.number,
            state=state,  # type: ignore[arg-type]
            position=position,
            waiting=waiting,
            eta_s=eta,
            step=step,
            total_steps=total,
            preview_png=preview,
            note=note,
        )
        self._throttle.push(live.job.id, view)

    def _refresh_positions_soon(self) -> None:
        # Many queue changes arrive together (a burst of submits): one refresh covers them all, and
        # a change during a refresh makes it run once more.
        self._positions_dirty = True
        if self._positions_task is None or self._positions_task.done():
            self._positions_task = self._tasks.spawn(self._refresh_positions(), name="positions")

    async def _refresh_positions(self) -> None:
        while self._positions_dirty:
            self._positions_dirty = False
            await asyncio.sleep(0)
            snap: QueueSnapshot = await self.queue.snapshot()
            running = len(snap.running)
            for position, queued in enumerate(snap.queued, start=1):
                live = self._live.get(queued.job_id)
                if live is None or live.position == position:
                    continue
                live.position = position
                eta = (
                    self._avg_render_s * (position - 1 + running) if self._avg_render_s is not None else None
                )
                self._push_status(live, "queued", position=position, waiting=len(snap.queued), eta=eta)

    # --- internals: delivering updates ---------------------------------------------------------

    async def _deliver(self, job_id: Any, view: Any) -> None:
        if view is None or self._notifier is None:
            return
        try:
            if isinstance(view, StatusView):
                mid = await self._notifier.show_status(await self._with_message_id(view))
                await self._remember_status_message(view, mid)
            elif isinstance(view, ResultView):
                mid = await self._notifier.show_result(await self._with_message_id(view))
                if mid is not None:
                    await self.note_shown(mid, view.round, view.job.id, MessageKind.STATUS)
            elif isinstance(view, FailureView):
                mid = await self._notifier.show_failure(await self._with_message_id(view))
                await self._remember_status_message(view, mid)
        except DestinationGoneError:
            log.info("scene %s: its thread is gone", view.scene.id)
            await self._cancel_scene_jobs(view.scene.id, "the thread is gone")

    async def _with_message_id(self, view: Any) -> Any:
        """The view with the job's current status message id (it may have been posted since)."""
        job = await self.repo.job(view.job.id)
        return view.model_copy(
            update={"job": view.job.model_copy(update={"status_message_id": job.status_message_id})}
        )

    async def _remember_status_message(self, view: StatusView | FailureView, message_id: int | None) -> None:
        if message_id is None or message_id == view.job.status_message_id:
            return
        await self.repo.update_job(view.job.id, status_message_id=message_id)
        round_ = (
            self._live[view.job.id].round
            if view.job.id in self._live
            else await self.repo.round(view.job.round_id)
        )
        await self.note_shown(message_id, round_, view.job.id, MessageKind.STATUS)
