"""The embedded queue: fair round-robin in memory, one GPU worker process on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lmd_bot.jobs.fair import FairQueue
from lmd_bot.jobs.models import (
    CancelOutcome,
    JobEvent,
    JobSpec,
    QueueChanged,
    QueuedJob,
    QueueFullError,
    QueueSnapshot,
)
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.jobs.supervisor import WorkerSupervisor

log = logging.getLogger(__name__)


class LocalJobQueue:
    def __init__(
        self, spec: RendererSpec, *, max_queued: int = 100, warm: bool = True, **limits: float
    ) -> None:
        """``limits``: the worker supervisor's (:func:`~lmd_bot.jobs.supervisor.supervisor_limits`)."""
        self._fair = FairQueue()
        self._specs: dict[int, JobSpec] = {}
        self._running: JobSpec | None = None
        self._max_queued = max_queued
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._work = asyncio.Event()
        self._closing = False
        self._warm = warm
        self._task: asyncio.Task[None] | None = None
        self.supervisor = WorkerSupervisor(spec, emit=self._events.put_nowait, **limits)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="lmd-local-queue")

    async def submit(self, spec: JobSpec) -> None:
        if self._closing:
            raise QueueFullError(
                "queue closing", user_message="The bot is restarting; try again in a minute."
            )
        if spec.job_id in self._specs or (self._running and self._running.job_id == spec.job_id):
            return
        if len(self._fair) >= self._max_queued:
            raise QueueFullError(f"{len(self._fair)} jobs waiting")
        self._specs[spec.job_id] = spec
        self._fair.push(QueuedJob(job_id=spec.job_id, user_id=spec.user_id, guild_id=spec.guild_id))
        self._work.set()
        self._events.put_nowait(QueueChanged())

    async def cancel(self, job_id: int) -> CancelOutcome:
        if self._fair.remove(job_id) is not None:
            del self._specs[job_id]
            self._events.put_nowait(QueueChanged())
            return CancelOutcome.REMOVED
        if self.supervisor.request_cancel(job_id):
            return CancelOutcome.STOPPING
        return CancelOutcome.UNKNOWN

    async def snapshot(self) -> QueueSnapshot:
        running = []
        if self._running is not None:
            r = self._running
            running.append(QueuedJob(job_id=r.job_id, user_id=r.user_id, guild_id=r.guild_id))
        return QueueSnapshot(running=running, queued=self._fair.order())

    async def known_jobs(self) -> set[int]:
        known = set(self._specs)
        if self._running is not None:
            known.add(self._running.job_id)
        return known

    async def next_event(self) -> JobEvent:
        return await self._events.get()

    async def close(self, grace_s: float) -> list[int]:
        self._closing = True
        self._work.set()
        aborted = []
        if self._task is not None:
            if self._running is not None:
                log.info("waiting up to %.0f s for job %s to finish", grace_s, self._running.job_id)
            done, _ = await asyncio.wait({self._task}, timeout=grace_s)
            if not done:
                if self._running is not None:
                    aborted.append(self._running.job_id)
                await self.supervisor.abort()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.supervisor.close()
        return aborted

    async def _dispatch(self) -> None:
        if self._warm:
            await self.supervisor.warm()
        while not self._closing:
            queued = self._fair.pop()
            if queued is None:
                self._work.clear()
                await self._work.wait()
                continue
            spec = self._specs.pop(queued.job_id)
            self._running = spec
            self._events.put_nowait(QueueChanged())
            try:
                await self.supervisor.run(spec)
            except Exception:  # a bug here must not stop the queue for everyone
                log.exception("job %s: the supervisor failed", spec.job_id)
            finally:
                self._running = None
                self._events.put_nowait(QueueChanged())
