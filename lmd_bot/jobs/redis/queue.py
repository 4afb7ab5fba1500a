"""The bot's side of the Redis queue: a fair line in memory, a job handed to Redis per free worker.

Waiting jobs stay in the bot (:class:`~lmd_bot.jobs.fair.FairQueue`, round-robin across users, as
the embedded queue does): the dispatcher adds a job to the ``jobs`` stream only while a live worker
has nothing to do, so the order users see in ``/queue`` is the order jobs start. The database stays
the record of every job: a job that waited here when the bot stopped is resubmitted by the scene
service at the next start, and one handed to a worker is found again in the stream.

Redis restarted with its data: every loop waits it out and resumes. Redis restarted without it
(the ``epoch`` key is gone): the jobs it held go back to the front of the line, and their workers'
late results are refused by the fencing check (:mod:`lmd_bot.jobs.redis.scripts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from redis.exceptions import ResponseError

from lmd_bot.errors import ConfigError
from lmd_bot.jobs.fair import FairQueue
from lmd_bot.jobs.models import (
    EVENT_ADAPTER,
    CancelOutcome,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobSpec,
    JobStarted,
    QueueChanged,
    QueuedJob,
    QueueFullError,
    QueueSnapshot,
)
from lmd_bot.jobs.redis.hold import Hold
from lmd_bot.jobs.redis.link import Link, QueueUnavailableError
from lmd_bot.jobs.redis.scripts import BOT_GROUP, WORKERS_GROUP, Keys, Scripts

log = logging.getLogger(__name__)

FINAL_EVENTS = (JobDone, JobFailed, JobCancelled)


class RedisJobQueue:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lmd",
        max_queued: int = 100,
        heartbeat_s: float = 5.0,
        connect_timeout_s: float = 30.0,
        cancel_timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self._keys = Keys(prefix)
        self._max_queued = max_queued
        self._poll_s = heartbeat_s  # how often an idle dispatcher checks for workers and lost data
        self._connect_timeout_s = connect_timeout_s
        self._cancel_timeout_s = cancel_timeout_s
        self._link: Link | None = None
        self._scripts: Scripts | None = None
        self._hold: Hold | None = None
        self._epoch = ""
        self._no_workers = False  # jobs wait and no worker is registered (logged once)
        # Waiting here, in turn order; handed to Redis (in dispatch order); started by a worker.
        self._fair = FairQueue()
        self._waiting: dict[int, JobSpec] = {}
        self._handed: dict[int, JobSpec] = {}
        self._started: set[int] = set()
        # Finished while the bot was away: the result waits in the event stream, unread.
        self._finishing: set[int] = set()
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Loops also check this flag: redis-py can swallow a cancellation that lands mid-command.
        self._closing = False

    # --- the JobQueue interface ----------------------------------------------------------------

    async def start(self) -> None:
        self._link = Link(self._url)
        self._scripts = Scripts.on(self._link.client)
        self._hold = Hold(self._link, self._scripts, self._keys.bot, expiry_s=3 * self._poll_s)
        refused = (
            f"queue.redis_prefix: another bot serves the queue {self._keys.prefix!r} on redis at "
            f"{self._link.where}; give each bot its own queue.redis_prefix, or stop the other one"
        )
        try:
            await self._link.call(self._link.client.ping, deadline_s=self._connect_timeout_s)
            # Redis answers: the wait for a stopped bot's hold is not bound by the connect timeout.
            await self._link.call(self._hold.take, refused)
            await self._link.call(self._adopt, deadline_s=self._connect_timeout_s)
            await self._link.call(self._check_eviction, deadline_s=self._connect_timeout_s)
        except QueueUnavailableError as exc:
            await self._link.close()
            raise QueueUnavailableError(f"{exc} (queue.redis_url)") from None
        except ConfigError:
            await self._link.close()
            raise
        self._tasks = [
            asyncio.create_task(self._read_events(), name="lmd-redis-events"),
            asyncio.create_task(self._dispatch_forever(), name="lmd-redis-dispatch"),
        ]

    async def submit(self, spec: JobSpec) -> None:
        if self._closing:
            raise QueueFullError(
                "queue closing", user_message="The bot is restarting; try again in a minute."
            )
        if spec.job_id in self._waiting or spec.job_id in self._handed:
            return
        if len(self._fair) >= self._max_queued:
            raise QueueFullError(f"{len(self._fair)} jobs waiting")
        self._waiting[spec.job_id] = spec
        self._fair.push(QueuedJob(job_id=spec.job_id, user_id=spec.user_id, guild_id=spec.guild_id))
        self._wake.set()
        self._events.put_nowait(QueueChanged())

    async def cancel(self, job_id: int) -> CancelOutcome:
        if self._fair.remove(job_id) is not None:
            del self._waiting[job_id]
            self._events.put_nowait(QueueChanged())
            return CancelOutcome.REMOVED
        if job_id not in self._handed:
            return CancelOutcome.UNKNOWN
        answer = await self._link.call(
            self._scripts.cancel, keys=[self._keys.prefix], args=[job_id], deadline_s=self._cancel_timeout_s
        )
        outcome = CancelOutcome(answer.decode())
        if outcome != CancelOutcome.STOPPING:
            self._forget(job_id)
            self._events.put_nowait(QueueChanged())
        return outcome

    async def snapshot(self) -> QueueSnapshot:
        """From what the bot knows (it sees every start and end), so it answers while Redis is down."""

        def entry(spec: JobSpec) -> QueuedJob:
            return QueuedJob(job_id=spec.job_id, user_id=spec.user_id, guild_id=spec.guild_id)

        handed = list(self._handed.values())
        return QueueSnapshot(
            running=[entry(s) for s in handed if s.job_id in self._started],
            queued=[entry(s) for s in handed if s.job_id not in self._started] + self._fair.order(),
            serving=not self._no_workers,
        )

    async def known_jobs(self) -> set[int]:
        return set(self._waiting) | set(self._handed) | self._finishing

    async def next_event(self) -> JobEvent:
        return await self._events.get()

    async def close(self, grace_s: float) -> list[int]:
        # Jobs handed to workers finish there, and their events wait in the stream for the next
        # start; the ones waiting here are queued in the database, and resubmitted then.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._link is not None:
            if self._tasks:  # started: the next bot need not wait for the hold to run out
                with contextlib.suppress(QueueUnavailableError):
                    await self._link.call(self._hold.let_go, deadline_s=1)
            await self._link.close()
        return []

    # --- state ---------------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Join what Redis holds: the epoch, the events group, the jobs handed out before a restart
        of the bot (and which of them a worker has started), and those whose result waits unread
        (so that the scene service does not submit them again)."""
        client = self._link.client
        await client.set(self._keys.epoch, uuid.uuid4().hex, nx=True)
        self._epoch = (await client.get(self._keys.epoch)).decode()
        await self._ensure_events_group()
        self._handed.clear()
        self._started.clear()
        for _, fields in await client.xrange(self._keys.events):
            with contextlib.suppress(KeyError, ValueError):
                event = EVENT_ADAPTER.validate_json(fields[b"e"])
                if isinstance(event, FINAL_EVENTS):
                    self._finishing.add(event.job_id)
        for _, fields in await client.xrange(self._keys.jobs):
            spec = JobSpec.model_validate_json(fields[b"spec"])
            self._handed[spec.job_id] = spec
        if self._handed:
            pending = await client.xpending_range(self._keys.jobs, WORKERS_GROUP, "-", "+", 10_000)
            ids = {p["message_id"] for p in pending}
            for entry_id, fields in await client.xrange(self._keys.jobs):
                if entry_id in ids:
                    self._started.add(int(fields[b"job"]))
            log.info("%d job(s) are with the workers", len(self._handed))

    async def _check_eviction(self) -> None:
        """Warn about a Redis that may drop the queue's keys when full: an evicted jobs stream
        would leave its jobs unfinished, unnoticed (only a lost epoch is noticed)."""
        try:
            policy = (await self._link.client.info("memory")).get("maxmemory_policy", "noeviction")
        except ResponseError:  # INFO not allowed (an ACL, a managed Redis): nothing to check
            return
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy != "noeviction":
            log.warning(
                "redis at %s has maxmemory-policy %s: when full it may evict the queue's jobs, "
                "which would then never finish; give the queue a Redis with maxmemory-policy noeviction",
                self._link.where,
                policy,
            )

    async def _ensure_events_group(self) -> None:
        try:
            await self._link.client.xgroup_create(self._keys.events, BOT_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _forget(self, job_id: int) -> None:
        self._handed.pop(job_id, None)
        self._started.discard(job_id)
        self._wake.set()  # a worker is free

    # --- handing jobs to workers ---------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._link.call(self._dispatch)
            except QueueUnavailableError:
                return  # closing
            except Exception:  # a bug here must not stop the queue for everyone
                log.exception("handing jobs to the workers failed")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()

    async def _dispatch(self) -> None:
        """Hand out jobs while workers are free; notice a Redis that lost its data."""
        await self._hold.renew()
        if not self._fair:
            epoch = await self._link.client.get(self._keys.epoch)
            if epoch is None or epoch.decode() != self._epoch:
                await self._recover_lost_data()
        while (queued := self._fair.peek()) is not None:
            spec = self._waiting[queued.job_id]
            answer: Any = await self._scripts.dispatch(
                keys=[self._keys.prefix], args=[self._epoch, spec.job_id, spec.model_dump_json()]
            )
            if answer == -1:
                await self._recover_lost_data()
                continue
            if answer == -2:
                if not self._no_workers:
                    self._no_workers = True
                    log.warning(
                        "%d job(s) waiting and no worker is serving the queue %r at %s: start `lmd-bot "
                        "worker` on a GPU host (same queue.redis_url and queue.redis_prefix)",
                        len(self._fair),
                        self._keys.prefix,
                        self._link.where,
                    )
                    self._events.put_nowait(QueueChanged())  # waiting users are told too
                return  # a worker that registers wakes us
            if answer == 0:
                return  # every worker is busy: a finished job or a new worker wakes us
            if self._no_workers:
                self._no_workers = False
                log.info("a worker is serving the queue %r again", self._keys.prefix)
                self._events.put_nowait(QueueChanged())
            self._fair.pop()
            del self._waiting[spec.job_id]
            self._handed[spec.job_id] = spec
            self._events.put_nowait(QueueChanged())

    async def _recover_lost_data(self) -> None:
        """Redis came back empty: a new epoch, the events group again, and every job it held back
        at the front of the line, in the order they were handed out."""
        client = self._link.client
        self._epoch = uuid.uuid4().hex
        await client.set(self._keys.epoch, self._epoch)
        await self._ensure_events_group()
        lost = list(self._handed.values())
        log.warning(
            "redis at %s lost the queue's data (restarted without persistence?); resubmitting %d job(s)",
            self._link.where,
            len(lost),
        )
        for spec in reversed(lost):
            self._waiting[spec.job_id] = spec
            self._fair.push_front(QueuedJob(job_id=spec.job_id, user_id=spec.user_id, guild_id=spec.guild_id))
        self._handed.clear()
        self._started.clear()
        self._events.put_nowait(QueueChanged())

    # --- events from the workers ---------------------------------------------------------------

    async def _read_events(self) -> None:
        client, stream = self._link.client, self._keys.events
        cursor = b"0"  # first what was read before a restart of the bot but never handled
        while not self._closing:
            try:
                answer = await self._link.call(
                    client.xreadgroup, BOT_GROUP, "bot", {stream: cursor}, count=100, block=1000
                )
            except QueueUnavailableError:
                return  # closing
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("reading job events failed: %s", exc)
                    await asyncio.sleep(1)
                    continue
                # Redis lost its data: the dispatcher resubmits what it held.
                await self._link.call(self._ensure_events_group)
                cursor = b"0"
                self._wake.set()
                continue
            entries = answer[0][1] if answer else []
            if cursor == b"0" and not entries:
                cursor = b">"
                continue
            for entry_id, fields in entries:
                self._handle(entry_id, fields)
            ids = [entry_id for entry_id, _ in entries]
            if ids:
                await self._link.call(self._ack, ids)

    async def _ack(self, ids: list[bytes]) -> None:
        async with self._link.client.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.events, BOT_GROUP, *ids)
            pipe.xdel(self._keys.events, *ids)
            await pipe.execute()

    def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if b"released" in fields:  # a stopping worker gave the job back: it waits for another
            self._started.discard(int(fields[b"released"]))
            self._wake.set()
            self._events.put_nowait(QueueChanged())
            return
        try:
            event = EVENT_ADAPTER.validate_json(fields[b"e"])
        except (KeyError, ValueError):
            log.error("unreadable job event %s in redis", entry_id)
            return
        if isinstance(event, JobStarted) and event.job_id in self._handed:
            self._started.add(event.job_id)
        elif isinstance(event, FINAL_EVENTS):
            self._forget(event.job_id)
            self._finishing.discard(event.job_id)
        elif isinstance(event, QueueChanged):
            self._wake.set()  # a worker joined or freed up
        self._events.put_nowait(event)
