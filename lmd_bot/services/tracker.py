"""The render tracker: follows every queued or running job from submit to its end.

It submits jobs to the queue, turns the queue's events into database updates and views for the
attached :class:`~lmd_bot.services.notifier.Notifier` (at most one edit per message per
``discord.status_edit_interval_s``), keeps waiting jobs' positions and ETAs current, and after a
restart picks up the jobs the previous run left. It never calls back into the use cases: they
hand it jobs, it reports what became of them.

A job's last step (saving the image, recording its end, delivering the result) is retried while
the disk or the database is busy; if it still fails, the job ends failed and its owner is told.
A job is never left ``running`` without a worker: an end the database would not take is written
again in the background until it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from lmd_bot.config import Settings
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.errors import LmdError, StorageError
from lmd_bot.jobs.base import JobQueue
from lmd_bot.jobs.models import (
    CancelOutcome,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobStarted,
    QueueChanged,
    QueueFullError,
    QueueSnapshot,
)
from lmd_bot.scenes.models import JobRecord, JobStatus, MessageKind, RoundRecord, SceneRecord
from lmd_bot.services.images import ImageStore
from lmd_bot.services.job_specs import job_spec
from lmd_bot.services.live import PLACE, Live, Place, place_status
from lmd_bot.services.notifier import DestinationGoneError, Notifier
from lmd_bot.services.policy import ServerPolicy
from lmd_bot.services.retry import retrying
from lmd_bot.services.tasks import TaskSet
from lmd_bot.services.throttle import EditThrottle
from lmd_bot.services.views import Actor, FailureView, QueueEntry, QueueView, ResultView, StatusView

log = logging.getLogger(__name__)

# How much the running-average render time follows the newest job.
_ETA_WEIGHT = 0.3
_GONE_SCENES_KEPT = 4096
# Pauses between tries of a job's last step (a busy disk or database often clears in seconds).
# How often an end the database refused is written again, in the background.
RECORD_AGAIN_S = 5.0

SAVE_FAILED = "I rendered this but couldn't save the image: the bot's storage is full or not writable."
RECORD_FAILED = "I rendered this but couldn't record it: the bot's database is busy."
FINISH_FAILED = "Something went wrong finishing this image; it has been logged."
QUEUE_SHRUNK = "The bot restarted with a smaller queue, and this image no longer fit in it."

Update = StatusView | ResultView | FailureView


class RenderTracker:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repository,
        queue: JobQueue,
        images: ImageStore,
        policy: ServerPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self._repo = repo
        self._images = images
        self._policy = policy
        self._clock = clock
        self._notifier: Notifier | None = None
        self._tasks = TaskSet()
        self._throttle = EditThrottle(
            settings.discord.status_edit_interval_s, self._deliver, self._tasks, clock
        )
        self._live: dict[int, Live] = {}
        # Each job's status message as last posted: a view built before the message existed is
        # delivered as an edit of it, without asking the database.
        self._status_ids: dict[int, int] = {}
        # Scenes whose thread a write found gone: their later updates are dropped, not tried (each
        # try of a locked thread is another refused request to reopen it), until a new job.
        self._gone: OrderedDict[int, None] = OrderedDict()
        self.avg_render_s: float | None = None
        self._positions_task: asyncio.Task[None] | None = None
        self._positions_dirty = False
        self._running_now = 0  # jobs running at the last look at the queue (for ETAs)
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
            job = await self._repo.job(job_id)
            if job.status == JobStatus.RUNNING:
                # Not the job's fault: the next start runs it again without counting this try.
                await self._repo.update_job(
                    job_id, status=JobStatus.QUEUED, attempts=max(0, job.attempts - 1)
                )
                log.info("job %s requeued for the next start", job_id)
        try:
            await asyncio.wait_for(self._throttle.drain(), timeout=10)
        except TimeoutError:
            log.warning("some status updates were not delivered before shutdown")
        await self._tasks.close()

    # --- what the use cases hand over ----------------------------------------------------------

    async def submit(self, scene: SceneRecord, round_: RoundRecord, job: JobRecord, attempt: int = 1) -> None:
        """Queue ``job``; if the queue refuses it, the job is marked failed and the error raised."""
        self._live[job.id] = Live(job=job, scene=scene, round=round_, queued_at=self._clock())
        self._gone.pop(scene.id, None)
        try:
            spec = await job_spec(self.settings, self._repo, self._images, scene, round_, job, attempt)
            await self.queue.submit(spec)
        except Exception as exc:
            del self._live[job.id]
            await self._record_end(job.id, JobStatus.FAILED, error=getattr(exc, "user_message", "queue"))
            raise
        log.info("job %s queued (scene %s round %s seed %s)", job.id, scene.id, round_.number, job.seed)
        self._refresh_positions_soon()

    def active_jobs(self, user_id: int) -> int:
        """The user's queued and running jobs: those followed here (every active job, once the
        jobs a previous run left are resumed)."""
        return sum(1 for live in self._live.values() if live.job.user_id == user_id)

    def deliver(self, view: ResultView) -> None:
        """Show a result that took no render (a picked candidate) as rendered ones are shown."""
        self._push_final(view)

    async def cancel(self, job: JobRecord, reason: str, *, notify: bool = True) -> CancelOutcome:
        """Take ``job`` out of the queue, or ask its worker to stop (a JobCancelled follows).
        ``notify=False``: the job's thread is not told (nobody saw the job)."""
        outcome = await self.queue.cancel(job.id)
        if outcome == CancelOutcome.REMOVED or (
            outcome == CancelOutcome.UNKNOWN and job.status == JobStatus.QUEUED
        ):
            await self._end_cancelled(job.id, reason, notify=notify)
        return outcome

    async def cancel_scene(self, scene_id: int, reason: str) -> int:
        """Cancel every active job of a scene without telling its (gone) thread; how many."""
        jobs = await self._repo.active_jobs_of_scene(scene_id)
        for job in jobs:
            outcome = await self.queue.cancel(job.id)
            if outcome != CancelOutcome.STOPPING:
                await self._end_cancelled(job.id, reason, notify=False)
        if jobs:
            log.info("scene %s: %d job(s) cancelled (%s)", scene_id, len(jobs), reason)
        return len(jobs)

    async def snapshot(self) -> QueueSnapshot:
        return await self.queue.snapshot()

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
        return QueueView(running=running, waiting=waiting, eta_per_job_s=self.avg_render_s)

    # --- internals: queueing -------------------------------------------------------------------

    async def _resume(self) -> None:
        known = await self.queue.known_jobs()
        max_attempts = self.settings.queue.max_attempts
        for job in await self._repo.jobs_with_status(JobStatus.RUNNING, JobStatus.QUEUED):
            try:
                scene, round_ = await self._repo.scene(job.scene_id), await self._repo.round(job.round_id)
            except NotFoundError:
                continue
            if job.id in known:
                self._live[job.id] = Live(job=job, scene=scene, round=round_, queued_at=self._clock())
                continue
            attempt = 1
            if job.status == JobStatus.RUNNING:
                if job.attempts >= max_attempts:
                    job = await self._repo.update_job(
                        job.id,
                        status=JobStatus.FAILED,
                        finished_at=datetime.now(UTC),
                        error="interrupted by a restart",
                    )
                    message = (
                        "The bot restarted while rendering this, and it had been tried before; giving up."
                    )
                    self._push_final(
                        FailureView(scene=scene, job=job, round_number=round_.number, message=message)
                    )
                    continue
                attempt = job.attempts + 1
                job = await self._repo.update_job(job.id, status=JobStatus.QUEUED)
            try:
                await self.submit(scene, round_, job, attempt)
            except LmdError as exc:  # the queue shrank, or a refine job's image is gone
                log.warning("job %s could not be resumed: %s", job.id, exc)
                said = QUEUE_SHRUNK if isinstance(exc, QueueFullError) else exc.user_message
                failed = job.model_copy(update={"status": JobStatus.FAILED, "error": said})
                self._push_final(
                    FailureView(scene=scene, job=failed, round_number=round_.number, message=said)
                )
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

    async def _live_job(self, job_id: int) -> Live:
        live = self._live.get(job_id)
        if live is None:
            job = await self._repo.job(job_id)
            live = Live(
                job=job,
                scene=await self._repo.scene(job.scene_id),
                round=await self._repo.round(job.round_id),
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
        match event:
            case JobStarted():
                live.job = await self._repo.update_job(
                    event.job_id,
                    status=JobStatus.RUNNING,
                    attempts=event.attempt,
                    started_at=datetime.now(UTC),
                )
                live.position = live.waiting = None
                self._push_status(live, "running", step=0, total=live.job.steps, note=live.retry_note)
            case JobProgress():
                self._push_status(
                    live,
                    "running",
                    step=event.step,
                    total=event.total,
                    preview=event.preview_png,
                    note=live.retry_note,
                )
            case JobRetrying():
                live.retry_note = event.user_message
                self._push_status(live, "retrying", note=event.user_message)
            case JobDone():
                try:
                    await self._on_done(live, event)
                except Exception:  # a bug must not leave the job running and its owner waiting
                    log.exception("job %s: finishing it failed", event.job_id)
                    await self._fail(live, FINISH_FAILED)
            case JobFailed():
                self._live.pop(event.job_id, None)
                log.warning("job %s failed: %s (%s)", event.job_id, event.user_message, event.detail)
                try:
                    job = await self._end(live, JobStatus.FAILED, error=event.user_message)
                except StorageError:  # marked failed in the background; the owner hears now
                    job = live.job.model_copy(
                        update={"status": JobStatus.FAILED, "error": event.user_message}
                    )
                if job is not None:
                    self._push_final(
                        FailureView(
                            scene=live.scene,
                            job=job,
                            round_number=live.round.number,
                            message=event.user_message,
                            retryable=event.retryable,
                        )
                    )
            case JobCancelled():
                await self._end_cancelled(event.job_id, event.reason or "cancelled")

    async def _on_done(self, live: Live, event: JobDone) -> None:
        self._live.pop(event.job_id, None)
        policy = await self._policy.safety(live.scene.guild_id, nsfw_channel=live.scene.nsfw)
        withheld = event.flagged and policy == "withhold"
        overlay = png = None
        image_path = overlay_path = None
        if not withheld:
            missing = event.check.missing_ids if event.check is not None else ()
            pictures = await self._images.result_pictures(  # a grid for candidates
                live.round.layout, event.png, missing, event.candidate_pngs
            )
            png, overlay = pictures.png, pictures.overlay_png
            try:
                image_path, overlay_path = await retrying(
                    lambda: self._images.save(
                        scene_id=live.scene.id,
                        job_id=event.job_id,
                        png=png,
                        overlay_png=overlay,
                        candidates=pictures.candidates,
                    ),
                    OSError,
                    f"saving job {event.job_id}'s image",
                )
            except OSError as exc:
                log.error("job %s: the image could not be saved: %s", event.job_id, exc)
                await self._fail(live, SAVE_FAILED)
                return
        try:
            job = await self._end(
                live,
                JobStatus.DONE,
                later=JobStatus.FAILED,
                image_path=image_path,
                overlay_path=overlay_path,
                flagged=event.flagged,
                render_seconds=event.seconds,
            )
        except StorageError:
            self._push_failure(live, RECORD_FAILED)
            return
        if job is None:
            return  # cancelled meanwhile: its status already says so
        self.avg_render_s = (
            event.seconds
            if self.avg_render_s is None
            else (1 - _ETA_WEIGHT) * self.avg_render_s + _ETA_WEIGHT * event.seconds
        )
        if event.flagged:
            log.warning("job %s flagged by the safety checker (policy %s)", job.id, policy)
        self._push_final(
            ResultView(
                scene=live.scene,
                round=live.round,
                job=job,
                image_png=png,
                overlay_png=overlay,
                spoiler=event.flagged and policy == "spoiler",
                withheld=withheld,
                render_s=event.seconds,
                total_s=self._clock() - live.queued_at,
                check=event.check,
                guidance_nonfinite=int(event.stats.get("guidance_nonfinite", 0)),
                refinable=not withheld and await self._policy.offers_refine(live.scene.guild_id, job),
            )
        )

    async def _fail(self, live: Live, message: str) -> None:
        """End a job failed (retryable) and tell its owner, even if the database is busy."""
        try:
            job = await self._end(live, JobStatus.FAILED, error=message)
        except StorageError:
            job = None  # marked failed in the background; the owner hears now
        else:
            if job is None:
                return  # cancelled meanwhile
        self._push_failure(live, message, job)

    def _push_failure(self, live: Live, message: str, job: JobRecord | None = None) -> None:
        job = job or live.job.model_copy(update={"status": JobStatus.FAILED, "error": message})
        self._push_final(
            FailureView(scene=live.scene, job=job, round_number=live.round.number, message=message)
        )

    # --- internals: the database and the disk may be busy ---------------------------------------

    async def _end(
        self, live: Live | int, status: JobStatus, *, later: JobStatus | None = None, **values: Any
    ) -> JobRecord | None:
        """Record a job's end (None if it ended already: a cancel raced it). While the database
        stays busy past the retries: StorageError, and the job is marked ``later`` (default
        ``status``) in the background once the database takes it."""
        job_id = live if isinstance(live, int) else live.job.id
        try:
            return await retrying(
                lambda: self._repo.finish_job_if_active(job_id, status, **values),
                StorageError,
                f"recording job {job_id} as {status}",
            )
        except StorageError:
            final = later or status
            kept = values if final == status else {"error": RECORD_FAILED}
            self._tasks.spawn(self._end_eventually(job_id, final, kept), name=f"record-{job_id}")
            raise

    async def _end_eventually(self, job_id: int, status: JobStatus, values: dict[str, Any]) -> None:
        while True:
            await asyncio.sleep(RECORD_AGAIN_S)
            try:
                await self._repo.finish_job_if_active(job_id, status, **values)
            except StorageError as exc:
                log.warning("job %s: still cannot record it as %s (%s)", job_id, status, exc)
                continue
            log.info("job %s recorded as %s", job_id, status)
            return

    async def _record_end(self, job_id: int, status: JobStatus, **values: Any) -> JobRecord | None:
        try:
            return await self._end(job_id, status, **values)
        except StorageError:
            return None  # written in the background

    async def _end_cancelled(self, job_id: int, reason: str, *, notify: bool = True) -> None:
        live = self._live.pop(job_id, None)
        try:
            job = await self._end(job_id, JobStatus.CANCELLED, error=reason)
        except StorageError:  # marked cancelled in the background; the thread hears now
            job = (live or await self._live_job(job_id)).job.model_copy(
                update={"status": JobStatus.CANCELLED}
            )
        if job is None or not notify:
            self._throttle.push(job_id, None, final=True)  # nothing more to show for it
            return
        live = live or await self._live_job(job_id)
        self._push_final(
            StatusView(
                scene=live.scene, job=job, round_number=live.round.number, state="cancelled", note=reason
            )
        )
        self._refresh_positions_soon()

    def _push_final(self, view: Update) -> None:
        self._throttle.push(view.job.id, view, final=True)

    def _push_status(
        self,
        live: Live,
        state: str,
        *,
        step: int | None = None,
        total: int | None = None,
        preview: bytes | None = None,
        note: str | None = None,
    ) -> None:
        view = StatusView(
            scene=live.scene,
            job=live.job,
            round_number=live.round.number,
            state=state,  # type: ignore[arg-type]
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
            snap = await self.queue.snapshot()
            self._running_now = len(snap.running)
            for position, queued in enumerate(snap.queued, start=1):
                live = self._live.get(queued.job_id)
                place = (position, len(snap.queued), snap.serving)
                if live is None or (live.position, live.waiting, live.serving) == place:
                    continue
                live.position, live.waiting, live.serving = place
                self._throttle.push(live.job.id, PLACE)

    # --- internals: delivering updates ---------------------------------------------------------

    async def _show(self, view: Update) -> int | None:
        assert self._notifier is not None
        match view:
            case StatusView():
                return await self._notifier.show_status(view)
            case ResultView():
                return await self._notifier.show_result(view)
            case FailureView():
                return await self._notifier.show_failure(view)

    async def _deliver(self, job_id: Hashable, view: Update | Place | None) -> None:
        if view is None:
            self._status_ids.pop(job_id, None)  # type: ignore[arg-type]
            return
        if isinstance(view, Place):
            live = self._live.get(job_id)  # type: ignore[arg-type]
            view = place_status(live, self._running_now, self.avg_render_s) if live else None
        if self._notifier is None or view is None:
            return
        if view.scene.id in self._gone:
            self._status_ids.pop(view.job.id, None)
            return
        known = self._status_ids.get(view.job.id, view.job.status_message_id)
        if known != view.job.status_message_id:
            view = view.model_copy(update={"job": view.job.model_copy(update={"status_message_id": known})})
        final = not isinstance(view, StatusView) or view.state == "cancelled"
        try:
            if final:  # an end must arrive: a failed post is tried again (a progress edit is not)
                message_id = await retrying(
                    lambda: self._show(view),
                    Exception,
                    f"showing job {view.job.id}'s end",
                    unless=DestinationGoneError,
                )
            else:
                message_id = await self._show(view)
        except DestinationGoneError:
            log.info("scene %s: its thread is gone", view.scene.id)
            self._status_ids.pop(view.job.id, None)
            self._gone[view.scene.id] = None
            while len(self._gone) > _GONE_SCENES_KEPT:
                self._gone.popitem(last=False)
            await self.cancel_scene(view.scene.id, "the thread is gone")
            return
        if final:
            self._status_ids.pop(view.job.id, None)
        elif message_id is not None:
            self._status_ids[view.job.id] = message_id
        if message_id is None or message_id == known:
            return
        if isinstance(view, ResultView):
            # The result is its own message: reactions and buttons on it find the round.
            await self._repo.link_message(
                message_id,
                scene_id=view.scene.id,
                round_id=view.round.id,
                job_id=view.job.id,
                kind=MessageKind.STATUS,
            )
        else:
            await self._repo.remember_status_message(view.job.id, message_id)
