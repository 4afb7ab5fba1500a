"""A worker host (``lmd-bot worker``): takes jobs from the Redis stream, renders each on its own
supervised GPU process (:class:`~lmd_bot.jobs.supervisor.WorkerSupervisor`, as the embedded queue
does), and publishes the events back.

An attempt is the pair (stream entry, delivery count) the worker read or claimed. While it runs,
the worker renews the attempt's lease every ``heartbeat_s``; a worker that stops doing so for
three beats (crashed, killed, stalled, cut off) loses it to the next idle worker, which claims the
entry (XAUTOCLAIM) and runs the job again, or fails it after ``max_attempts`` tries. Every event
is published through a script that checks the attempt is still this worker's: a late finisher's
result is dropped, so each job's result reaches the bot once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis.exceptions import ResponseError

from lmd_bot.errors import LmdError
from lmd_bot.jobs.models import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSpec,
    QueueChanged,
)
from lmd_bot.jobs.redis.hold import Hold
from lmd_bot.jobs.redis.link import Link, QueueUnavailableError
from lmd_bot.jobs.redis.scripts import WORKERS_GROUP, Keys, Scripts
from lmd_bot.jobs.supervisor import CRASH_MESSAGE, WorkerSupervisor

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS_CAP = 10_000  # events kept in Redis while the bot is away (it deletes what it reads)
LOST_MESSAGE = f"{CRASH_MESSAGE} I'm retrying on another worker."


class RendererStartError(LmdError):
    """This host cannot render (its models do not load): it takes no jobs."""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a call returned (which may be None), as against no answer at all."""

    value: T


@dataclass(frozen=True)
class Attempt:
    """One try of a job on this worker; (entry, count) is its fencing token."""

    entry: bytes
    count: int
    spec: JobSpec

    @property
    def job_id(self) -> int:
        return self.spec.job_id


class RedisWorker:
    def __init__(
        self,
        url: str,
        supervisor_factory: Callable[[Callable[[JobEvent], None]], WorkerSupervisor],
        *,
        prefix: str = "lmd",
        name: str | None = None,
        heartbeat_s: float = 5.0,
        cancel_poll_s: float = 0.5,
        max_attempts: int = 2,
        progress_interval_s: float = 0.0,
        block_s: float = 1.0,
    ) -> None:
        self._url = url
        self._keys = Keys(prefix)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._heartbeat_s = heartbeat_s
        self._lease_ms = int(heartbeat_s * 3 * 1000)
        self._cancel_poll_s = cancel_poll_s
        self._max_attempts = max_attempts
        self._progress_interval_s = progress_interval_s
        self._block_ms = int(block_s * 1000)
        self._outbox: asyncio.Queue[tuple[Attempt | None, JobEvent]] = asyncio.Queue()
        self._attempt: Attempt | None = None
        self.supervisor = supervisor_factory(lambda event: self._outbox.put_nowait((self._attempt, event)))
        self._link: Link | None = None
        self._scripts: Scripts | None = None
        self.current: JobSpec | None = None
        self.jobs_done = 0
        self.results_dropped = 0  # final events refused because another worker holds the job
        self._named = False  # this worker holds its name (no other worker of that name runs)
        self._stopped = False  # loops check it too: a cancellation can be lost inside redis-py

    async def run(self, stop: asyncio.Event, grace_s: float = 30.0) -> None:
        """Take jobs until ``stop`` is set; then let the current job finish within ``grace_s``
        seconds, or stop it and give it back for another worker. Between jobs a stop ends at once,
        even a wait for a Redis that is down."""
        self._link = Link(self._url, block_s=self._block_ms / 1000)
        self._scripts = Scripts.on(self._link.client)
        self._hold = Hold(self._link, self._scripts, self._keys.worker(self.name), self._lease_ms / 1000)
        forwarder = asyncio.create_task(self._forward(), name="lmd-worker-events")
        beat: asyncio.Task[None] | None = None
        try:
            if (failed := await self.supervisor.warm()) is not None:
                # Registered, it would fail each job it took at once and, free again at once, take
                # most of them from the healthy workers: it stops instead (its host may restart it).
                raise RendererStartError(f"worker {self.name}: the GPU worker could not start: {failed}")
            refused = (
                f"another worker named {self.name!r} serves the queue {self._keys.prefix!r} on redis at "
                f"{self._link.where}; give each worker its own --name"
            )
            if not await self._unless_stopped(self._link.call(self._hold.take, refused), stop):
                return
            self._named = True
            # Registered once the models are loaded: the bot hands jobs only to ready workers.
            if not await self._unless_stopped(self._beat_once(), stop):
                return
            beat = asyncio.create_task(self._beat_forever(), name="lmd-worker-beat")
            self._outbox.put_nowait((None, QueueChanged()))  # the bot may have jobs for us
            log.info("worker %s taking jobs from %s (%s)", self.name, self._keys.prefix, self._link.where)
            while not stop.is_set():
                taken = await self._unless_stopped(self._next(stop), stop)
                if taken and taken.value is not None:
                    await self._run_one(taken.value, stop, grace_s)
        finally:
            self._stopped = True
            await self.supervisor.close()
            await self._drain(grace_s)
            for task in (forwarder, beat):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (forwarder, beat) if t is not None), return_exceptions=True)
            await self._unregister()
            await self._link.close()
            log.info("worker %s stopped", self.name)

    async def _unless_stopped(self, call: Awaitable[T], stop: asyncio.Event) -> Outcome[T] | None:
        """``call``'s outcome, or None when ``stop`` comes first. Between jobs the worker waits on
        Redis, for as long as an outage lasts: a stop must end that wait, not wait for Redis."""
        task = asyncio.ensure_future(call)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            task.cancel()  # nothing if it is done: a job taken as the stop came is still run
        try:
            return Outcome(await task)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # this worker itself is being cancelled
                raise
            return None

    # --- taking jobs ---------------------------------------------------------------------------

    async def _next(self, stop: asyncio.Event) -> Attempt | None:
        """A job of a lost worker first, else a new one (waiting up to ``block_s`` for it)."""
        claimed = await self._link.call(
            self._scripts.claim, keys=[self._keys.prefix], args=[self.name, self._lease_ms]
        )
        if claimed:
            entry, fields, count = claimed
            return self._attempt_of(entry, dict(zip(fields[::2], fields[1::2], strict=True)), int(count))
        try:
            answer = await self._link.call(
                self._link.client.xreadgroup,
                WORKERS_GROUP,
                self.name,
                {self._keys.jobs: ">"},
                count=1,
                block=self._block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._link.call(self._create_group)
            return None
        if not answer or not answer[0][1]:
            return None
        entry, fields = answer[0][1][0]
        return self._attempt_of(entry, fields, 1)

    async def _create_group(self) -> None:
        try:
            await self._link.client.xgroup_create(self._keys.jobs, WORKERS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _attempt_of(self, entry: bytes, fields: dict[bytes, bytes], count: int) -> Attempt:
        spec = JobSpec.model_validate_json(fields[b"spec"])
        # The spec's attempt is the try it was handed out as; each claim is one more.
        return Attempt(
            entry=entry, count=count, spec=spec.model_copy(update={"attempt": spec.attempt + count - 1})
        )

    async def _run_one(self, attempt: Attempt, stop: asyncio.Event, grace_s: float) -> None:
        spec = attempt.spec
        self._attempt = attempt
        try:
            # First: a job its owner cancelled (maybe while its last worker was lost) just ends.
            if await self._link.call(self._link.client.exists, self._keys.cancel(spec.job_id)):
                self._emit(JobCancelled(job_id=spec.job_id))
                return
            if attempt.count > 1:
                log.warning(
                    "job %s: its worker stopped answering; taking it over (try %d)", spec.job_id, spec.attempt
                )
                if spec.attempt > self._max_attempts:
                    self._emit(JobFailed(job_id=spec.job_id, user_message=CRASH_MESSAGE, detail="lost"))
                    return
                self._emit(JobRetrying(job_id=spec.job_id, attempt=spec.attempt, user_message=LOST_MESSAGE))
            await self._render(attempt, stop, grace_s)
        finally:
            await self._drain(None if not stop.is_set() else grace_s)
            self._attempt = None

    def _emit(self, event: JobEvent) -> None:
        self._outbox.put_nowait((self._attempt, event))

    async def _render(self, attempt: Attempt, stop: asyncio.Event, grace_s: float) -> None:
        spec = attempt.spec
        self.current = spec
        finished = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel(spec.job_id, finished))
        run = asyncio.create_task(self.supervisor.run(spec))
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                log.info("stopping: giving job %s %.0f s to finish", spec.job_id, grace_s)
                done, _ = await asyncio.wait({run}, timeout=grace_s)
                if not done:
                    await self.supervisor.abort()
                    await run
                    await self._link.call(
                        self._scripts.release,
                        keys=[self._keys.prefix],
                        args=[
                            self.name,
                            attempt.entry,
                            attempt.count,
                            spec.job_id,
                            attempt.spec.model_dump_json(),
                            EVENTS_CAP,
                        ],
                        deadline_s=grace_s,
                    )
                    log.info("job %s given back for another worker", spec.job_id)
                    return
            await run
            self.jobs_done += 1
        finally:
            # Also on cancellation of this worker: nothing of the job may keep running.
            finished.set()
            for task in (run, stopper, watcher):
                task.cancel()
            await asyncio.gather(run, stopper, watcher, return_exceptions=True)
            self.current = None

    async def _watch_cancel(self, job_id: int, finished: asyncio.Event) -> None:
        while not finished.is_set():
            if await self._link.call(self._link.client.exists, self._keys.cancel(job_id)):
                self.supervisor.request_cancel(job_id)
            await asyncio.sleep(self._cancel_poll_s)

    # --- staying alive -------------------------------------------------------------------------

    async def _beat_once(self) -> None:
        attempt = self._attempt
        entry, count = (attempt.entry, attempt.count) if attempt is not None else (b"", 0)
        await self._link.call(self._hold.renew)
        held = await self._link.call(
            self._scripts.beat, keys=[self._keys.prefix], args=[self.name, self._lease_ms, entry, count]
        )
        if not held and attempt is not None and attempt is self._attempt:
            # Another worker took the job over (or Redis lost it): stop rendering for nobody.
            log.warning("job %s: lease lost to another worker; stopping it here", attempt.job_id)
            self.supervisor.request_cancel(attempt.job_id)

    async def _beat_forever(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._heartbeat_s)
            await self._beat_once()

    async def _unregister(self) -> None:
        if not self._named:
            return  # the name is another worker's, or was never checked: leave its entries alone
        with contextlib.suppress(QueueUnavailableError):  # else the registration runs out by itself
            await self._link.call(self._link.client.zrem, self._keys.workers, self.name, deadline_s=2)
            await self._link.call(self._hold.let_go, deadline_s=1)

    # --- publishing events ---------------------------------------------------------------------

    async def _drain(self, timeout_s: float | None) -> None:
        """Wait until every event emitted so far is published (or refused)."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout_s):
                await self._outbox.join()
        except TimeoutError:
            log.warning("%d event(s) not published before stopping", self._outbox.qsize())

    async def _forward(self) -> None:
        last_progress = 0.0
        while True:  # only ever cancelled while waiting on the outbox or on Redis
            attempt, event = await self._outbox.get()
            try:
                if isinstance(event, JobProgress):
                    # Only what the bot shows: one preview per status edit, and none that a newer
                    # event already makes stale.
                    now = time.monotonic()
                    if not self._outbox.empty() or now - last_progress < self._progress_interval_s:
                        continue
                    last_progress = now
                await self._publish(attempt, event)
            except Exception:  # an answer no retry helps: one event lost, not every later one
                log.exception("publishing %s of job %s failed", event.kind, getattr(event, "job_id", "-"))
            finally:
                self._outbox.task_done()

    async def _publish(self, attempt: Attempt | None, event: JobEvent) -> None:
        if attempt is None:  # not about a job (a worker joined)
            await self._link.call(
                self._link.client.xadd,
                self._keys.events,
                {"e": event.model_dump_json()},
                maxlen=EVENTS_CAP,
                approximate=True,
            )
            return
        final = isinstance(event, JobDone | JobFailed | JobCancelled)
        published = await self._link.call(
            self._scripts.publish,
            keys=[self._keys.prefix],
            args=[
                self.name,
                attempt.entry,
                attempt.count,
                event.model_dump_json(),
                int(final),
                attempt.job_id,
                EVENTS_CAP,
            ],
        )
        if not published and final:
            self.results_dropped += 1
            log.warning("job %s: %s dropped: another worker holds the job now", attempt.job_id, event.kind)
