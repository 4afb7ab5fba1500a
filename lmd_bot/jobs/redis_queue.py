"""The scale-out queue: jobs wait in Redis; ``lmd-bot worker`` processes on any host take them.

The bot (:class:`RedisJobQueue`) submits, cancels and reads events; each worker host
(:class:`RedisWorker`) pulls one job at a time and runs it on its own supervised GPU worker
process, exactly as the embedded queue does. Fairness is the same round-robin: each user has a
line, and a turns list says whose line gives the next job. Every step that touches several keys is
one Lua script, so concurrent workers and the bot never see half an update.

Keys, under ``queue.redis_prefix`` (``P``):

- ``P:job:<id>`` hash (``spec``: JobSpec JSON, ``user``), while the job is waiting or running;
- ``P:line:<user>`` list of that user's waiting job ids; ``P:turns`` list and ``P:turnset`` set
  of users with waiting jobs, in turn order; ``P:waiting`` set of waiting job ids;
- ``P:running`` hash job id -> worker name; ``P:hb:<id>`` heartbeat key (expires unless the
  worker renews it); ``P:cancel:<id>`` a flag the worker polls;
- ``P:events`` stream of job events (JSON), read by the bot through the consumer group ``bot``;
- ``P:wake`` a one-token list workers block on instead of polling.

A worker host that dies mid-job stops renewing its heartbeat: the bot's reaper puts the job back
at the front of its user's line (or fails it after ``queue.max_attempts`` tries) and says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError, ResponseError

from lmd_bot.errors import LmdError
from lmd_bot.jobs.models import (
    EVENT_ADAPTER,
    CancelOutcome,
    JobEvent,
    JobFailed,
    JobRetrying,
    JobSpec,
    QueueChanged,
    QueuedJob,
    QueueFullError,
    QueueSnapshot,
)
from lmd_bot.jobs.supervisor import CRASH_MESSAGE

log = logging.getLogger(__name__)

GROUP = "bot"
STREAM_MAX = 10_000

_SUBMIT = """
local p = KEYS[1]
local id, user, spec, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', p..':job:'..id) == 1 then return 0 end
if redis.call('SCARD', p..':waiting') >= max then return -1 end
redis.call('HSET', p..':job:'..id, 'spec', spec, 'user', user)
redis.call('SADD', p..':waiting', id)
redis.call('RPUSH', p..':line:'..user, id)
if redis.call('SADD', p..':turnset', user) == 1 then redis.call('RPUSH', p..':turns', user) end
redis.call('DEL', p..':wake')
redis.call('RPUSH', p..':wake', '1')
return 1
"""

# ARGV: worker name, heartbeat ttl (ms). Returns {id, spec} or nil.
_POP = """
local p = KEYS[1]
local user = redis.call('LPOP', p..':turns')
if not user then return nil end
local id = redis.call('LPOP', p..':line:'..user)
if redis.call('LLEN', p..':line:'..user) > 0 then
  redis.call('RPUSH', p..':turns', user)
else
  redis.call('SREM', p..':turnset', user)
end
if not id then return nil end
redis.call('SREM', p..':waiting', id)
redis.call('HSET', p..':running', id, ARGV[1])
redis.call('SET', p..':hb:'..id, ARGV[1], 'PX', ARGV[2])
return {id, redis.call('HGET', p..':job:'..id, 'spec')}
"""

_CANCEL = """
local p, id = KEYS[1], ARGV[1]
if redis.call('SISMEMBER', p..':waiting', id) == 1 then
  local user = redis.call('HGET', p..':job:'..id, 'user')
  redis.call('LREM', p..':line:'..user, 0, id)
  redis.call('SREM', p..':waiting', id)
  redis.call('DEL', p..':job:'..id)
  if redis.call('LLEN', p..':line:'..user) == 0 then
    redis.call('LREM', p..':turns', 0, user)
    redis.call('SREM', p..':turnset', user)
  end
  return 'removed'
end
if redis.call('HEXISTS', p..':running', id) == 1 then
  redis.call('SET', p..':cancel:'..id, '1', 'EX', 86400)
  return 'stopping'
end
return 'unknown'
"""

# Put a job back at the front of its user's line, and the user at the front of the turns:
# it already waited its turn once. ARGV: id, spec (with the attempt number to run next).
_REQUEUE = """
local p, id = KEYS[1], ARGV[1]
local user = redis.call('HGET', p..':job:'..id, 'user')
if not user then return 0 end
redis.call('HDEL', p..':running', id)
redis.call('DEL', p..':hb:'..id)
redis.call('HSET', p..':job:'..id, 'spec', ARGV[2])
redis.call('SADD', p..':waiting', id)
redis.call('LPUSH', p..':line:'..user, id)
redis.call('LREM', p..':turns', 0, user)
redis.call('LPUSH', p..':turns', user)
redis.call('SADD', p..':turnset', user)
redis.call('DEL', p..':wake')
redis.call('RPUSH', p..':wake', '1')
return 1
"""

_FINISH = """
local p, id = KEYS[1], ARGV[1]
redis.call('HDEL', p..':running', id)
redis.call('DEL', p..':hb:'..id, p..':cancel:'..id, p..':job:'..id)
return 1
"""


class QueueUnavailableError(LmdError):
    user_message = "The render queue is unavailable right now; try again in a minute."


def _connect(url: str):
    return redis_asyncio.from_url(url, decode_responses=False, health_check_interval=30)


class _Scripts:
    def __init__(self, client) -> None:
        self.submit = client.register_script(_SUBMIT)
        self.pop = client.register_script(_POP)
        self.cancel = client.register_script(_CANCEL)
        self.requeue = client.register_script(_REQUEUE)
        self.finish = client.register_script(_FINISH)


async def _publish(client, prefix: str, event: JobEvent) -> None:
    await client.xadd(f"{prefix}:events", {"e": event.model_dump_json()}, maxlen=STREAM_MAX, approximate=True)


class RedisJobQueue:
    """The bot's side: submit, cancel, look, read events, and reap jobs of dead worker hosts."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lmd",
        max_queued: int = 100,
        max_attempts: int = 2,
        heartbeat_s: float = 5.0,
        consumer: str | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._max_queued = max_queued
        self._max_attempts = max_attempts
        self._heartbeat_s = heartbeat_s
        self._consumer = consumer or f"bot-{socket.gethostname()}"
        self._client: Any = None
        self._scripts: _Scripts | None = None
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # Loops also check this flag: redis-py can swallow a cancellation that lands mid-command.
        self._closing = False

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    async def start(self) -> None:
        self._client = _connect(self._url)
        self._scripts = _Scripts(self._client)
        try:
            await self._client.xgroup_create(self._key("events"), GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except (RedisError, OSError) as exc:
            raise QueueUnavailableError(f"redis: {exc}") from None
        self._tasks = [
            asyncio.create_task(self._read_events(), name="lmd-redis-events"),
            asyncio.create_task(self._reap(), name="lmd-redis-reaper"),
        ]

    async def _call(self, coro):
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise QueueUnavailableError(f"redis: {exc}") from None

    async def submit(self, spec: JobSpec) -> None:
        result = await self._call(
            self._scripts.submit(
                keys=[self._prefix],
                args=[spec.job_id, spec.user_id, spec.model_dump_json(), self._max_queued],
            )
        )
        if result == -1:
            raise QueueFullError("redis queue full")
        if result == 1:
            self._events.put_nowait(QueueChanged())

    async def cancel(self, job_id: int) -> CancelOutcome:
        outcome = CancelOutcome(
            (await self._call(self._scripts.cancel(keys=[self._prefix], args=[job_id]))).decode()
        )
        if outcome == CancelOutcome.REMOVED:
            self._events.put_nowait(QueueChanged())
        return outcome

    async def snapshot(self) -> QueueSnapshot:
        client = self._client

        async def read():
            running = {}
            for job_id in await client.hkeys(self._key("running")):
                user = await client.hget(self._key(f"job:{job_id.decode()}"), "user")
                running[int(job_id)] = int(user or 0)
            turns = await client.lrange(self._key("turns"), 0, -1)
            lines = [
                [int(j) for j in await client.lrange(self._key(f"line:{u.decode()}"), 0, -1)] for u in turns
            ]
            return running, turns, lines

        running, turns, lines = await self._call(read())
        users = {}
        for user, line in zip(turns, lines, strict=True):
            for job_id in line:
                users[job_id] = int(user)
        order: list[int] = []
        pending = [list(line) for line in lines]
        while any(pending):
            for line in pending:
                if line:
                    order.append(line.pop(0))
        return QueueSnapshot(
            running=[QueuedJob(job_id=j, user_id=u) for j, u in sorted(running.items())],
            queued=[QueuedJob(job_id=j, user_id=users[j]) for j in order],
        )

    async def known_jobs(self) -> set[int]:
        async def read():
            waiting = await self._client.smembers(self._key("waiting"))
            running = await self._client.hkeys(self._key("running"))
            return {int(j) for j in (*waiting, *running)}

        return await self._call(read())

    async def next_event(self) -> JobEvent:
        return await self._events.get()

    async def close(self, grace_s: float) -> list[int]:
        # Running jobs belong to the worker hosts: they finish there and their events wait in the
        # stream for the next start.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        return []

    async def _read_events(self) -> None:
        stream = self._key("events")
        cursor = b"0"  # first what this consumer was given but never acknowledged, then new ones
        while not self._closing:
            try:
                answer = await self._client.xreadgroup(
                    GROUP, self._consumer, {stream: cursor}, count=100, block=1000
                )
            except (RedisError, OSError) as exc:
                log.warning("reading job events from redis failed (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            entries = answer[0][1] if answer else []
            if cursor == b"0" and not entries:
                cursor = b">"
                continue
            for entry_id, fields in entries:
                try:
                    self._events.put_nowait(EVENT_ADAPTER.validate_json(fields[b"e"]))
                except (KeyError, ValueError):
                    log.error("unreadable job event %s in redis", entry_id)
                await self._client.xack(stream, GROUP, entry_id)

    async def _reap(self) -> None:
        """Requeue (or fail) running jobs whose worker stopped renewing its heartbeat."""
        while not self._closing:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._reap_once()
            except (RedisError, OSError) as exc:
                log.warning("checking worker heartbeats failed: %s", exc)

    async def _reap_once(self) -> None:
        running = await self._client.hgetall(self._key("running"))
        for raw_id, worker in running.items():
            job_id = raw_id.decode()
            if await self._client.exists(self._key(f"hb:{job_id}")):
                continue
            raw = await self._client.hget(self._key(f"job:{job_id}"), "spec")
            if raw is None:
                await self._scripts.finish(keys=[self._prefix], args=[job_id])
                continue
            spec = JobSpec.model_validate_json(raw)
            log.warning("job %s: worker %s stopped answering", job_id, worker.decode())
            if spec.attempt >= self._max_attempts:
                await self._scripts.finish(keys=[self._prefix], args=[job_id])
                self._events.put_nowait(
                    JobFailed(job_id=spec.job_id, user_message=CRASH_MESSAGE, detail="lost")
                )
            else:
                again = spec.model_copy(update={"attempt": spec.attempt + 1})
                await self._scripts.requeue(keys=[self._prefix], args=[job_id, again.model_dump_json()])
                self._events.put_nowait(
                    JobRetrying(
                        job_id=spec.job_id,
                        attempt=again.attempt,
                        user_message=f"{CRASH_MESSAGE} I'm retrying on another worker.",
                    )
                )
            self._events.put_nowait(QueueChanged())


class RedisWorker:
    """A worker host's loop: take a job, run it on the supervised GPU process, publish events."""

    def __init__(
        self,
        url: str,
        supervisor_factory,
        *,
        prefix: str = "lmd",
        name: str | None = None,
        heartbeat_s: float = 5.0,
        cancel_poll_s: float = 0.5,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._heartbeat_s = heartbeat_s
        self._cancel_poll_s = cancel_poll_s
        self._outbox: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.supervisor = supervisor_factory(self._outbox.put_nowait)
        self._client: Any = None
        self.current: JobSpec | None = None
        self.jobs_done = 0

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    async def run(self, stop: asyncio.Event, grace_s: float = 30.0) -> None:
        """Take jobs until ``stop`` is set; then let the current job finish within ``grace_s``
        seconds, or stop it and put it back at the front of the queue."""
        self._client = _connect(self._url)
        scripts = _Scripts(self._client)
        forwarder = asyncio.create_task(self._forward(), name="lmd-worker-events")
        await self.supervisor.warm()
        log.info("worker %s taking jobs from %s", self.name, self._prefix)
        try:
            while not stop.is_set():
                ttl_ms = int(self._heartbeat_s * 3 * 1000)
                popped = await scripts.pop(keys=[self._prefix], args=[self.name, ttl_ms])
                if not popped:
                    await self._client.blpop([self._key("wake")], timeout=1)
                    continue
                spec = JobSpec.model_validate_json(popped[1])
                await self._run_one(spec, scripts, stop, grace_s)
        finally:
            await self.supervisor.close()
            await self._outbox.join()
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
            await self._client.aclose()

    async def _run_one(self, spec: JobSpec, scripts: _Scripts, stop: asyncio.Event, grace_s: float) -> None:
        self.current = spec
        self._outbox.put_nowait(QueueChanged())
        finished = asyncio.Event()
        helpers = [
            asyncio.create_task(self._heartbeat(spec.job_id, finished)),
            asyncio.create_task(self._watch_cancel(spec.job_id, finished)),
        ]
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
                    await scripts.requeue(keys=[self._prefix], args=[spec.job_id, spec.model_dump_json()])
                    log.info("job %s put back in the queue", spec.job_id)
                    return
            await run
            self.jobs_done += 1
            await scripts.finish(keys=[self._prefix], args=[spec.job_id])
            self._outbox.put_nowait(QueueChanged())
        finally:
            # Also on cancellation of this worker: nothing of the job may keep running.
            finished.set()
            for task in (run, stopper, *helpers):
                task.cancel()
            await asyncio.gather(run, stopper, *helpers, return_exceptions=True)
            self.current = None

    async def _heartbeat(self, job_id: int, finished: asyncio.Event) -> None:
        while not finished.is_set():
            await self._client.set(self._key(f"hb:{job_id}"), self.name, px=int(self._heartbeat_s * 3 * 1000))
            await asyncio.sleep(self._heartbeat_s)

    async def _watch_cancel(self, job_id: int, finished: asyncio.Event) -> None:
        while not finished.is_set():
            if await self._client.exists(self._key(f"cancel:{job_id}")):
                self.supervisor.request_cancel(job_id)
            await asyncio.sleep(self._cancel_poll_s)

    async def _forward(self) -> None:
        while True:  # only ever cancelled while waiting on the outbox, never mid-command
            event = await self._outbox.get()
            try:
                for attempt in range(5):
                    try:
                        await _publish(self._client, self._prefix, event)
                        break
                    except (RedisError, OSError) as exc:
                        log.warning("publishing an event failed (%s), try %d", exc, attempt + 1)
                        await asyncio.sleep(min(2**attempt, 10))
            finally:
                self._outbox.task_done()
