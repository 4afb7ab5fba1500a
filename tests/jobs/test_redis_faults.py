"""The Redis queue under faults, against real redis-servers this module starts and restarts:
Redis restarted with and without its data, a worker host stalled (SIGSTOP) or killed (SIGKILL)
mid-job, a worker started before Redis, and 200 jobs of 20 users through two workers.

Each asserts what users care about: every job's result arrives exactly once, no worker exits, the
queue's view stays true, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from lmd_bot.errors import ConfigError
from lmd_bot.jobs.models import (
    CancelOutcome,
    JobCancelled,
    JobDone,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSpec,
    JobStarted,
    QueueChanged,
)
from lmd_bot.jobs.redis import QueueUnavailableError, RedisJobQueue, RedisWorker
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.jobs.supervisor import WorkerSupervisor
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderRequest
from tests.jobs.redis_server import RedisProcess
from tests.jobs.renderers import spec

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = SceneLayout.model_validate({"objects": [{"id": 1, "caption": "a cat", "box": [10, 10, 100, 100]}]})
PREVIEW = RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer")
PREFIX = "faults"
FINAL = (JobDone, JobFailed, JobCancelled)


def _job(job_id: int, user: int, seed: int = 0, steps: int = 2) -> JobSpec:
    return JobSpec(job_id=job_id, user_id=user, request=RenderRequest(layout=LAYOUT, seed=seed, steps=steps))


def _worker(url: str, name: str, renderer: RendererSpec = PREVIEW) -> RedisWorker:
    def supervisor(emit):
        return WorkerSupervisor(renderer, emit=emit, job_timeout_s=60, cancel_grace_s=2, name=name)

    return RedisWorker(
        url, supervisor, prefix=PREFIX, name=name, heartbeat_s=0.2, cancel_poll_s=0.05, block_s=0.2
    )


async def _bot(url: str) -> RedisJobQueue:
    queue = RedisJobQueue(url, prefix=PREFIX, heartbeat_s=0.2, max_queued=500)
    await queue.start()
    return queue


async def _collect(queue, until, events=None, timeout=30.0):
    events = [] if events is None else events
    while not until(events):
        events.append(await asyncio.wait_for(queue.next_event(), timeout))
    return events


async def _settle(queue, events, quiet_s=1.0):
    """Whatever else arrives within ``quiet_s`` (a duplicate result would)."""
    while True:
        try:
            events.append(await asyncio.wait_for(queue.next_event(), quiet_s))
        except TimeoutError:
            return events


def _finished(ids):
    return lambda events: {e.job_id for e in events if isinstance(e, FINAL)} >= set(ids)


def _started(n):
    return lambda events: len({e.job_id for e in events if isinstance(e, JobStarted)}) >= n


@pytest.fixture
def server():
    servers = []

    def make(persistent: bool) -> RedisProcess:
        s = RedisProcess(persistent=persistent)
        s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
async def test_redis_restarted_mid_run_every_job_completes_exactly_once(server, persistent, tmp_path):
    redis = server(persistent)
    bot = await _bot(redis.url)
    gated = spec("gated", folder=str(tmp_path))
    workers = [_worker(redis.url, "w1", gated), _worker(redis.url, "w2", gated)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        for job_id in range(1, 7):
            await bot.submit(_job(job_id, user=10 + job_id % 3, seed=job_id))
        events = await _collect(bot, _started(2))  # two rendering, four waiting
        await asyncio.to_thread(redis.restart, 0.5)
        await asyncio.sleep(1.0)
        (tmp_path / "go").touch()
        await _collect(bot, _finished(range(1, 7)), events, timeout=60)
        await _settle(bot, events)
        assert Counter(e.job_id for e in events if isinstance(e, JobDone)) == dict.fromkeys(range(1, 7), 1)
        assert not [e for e in events if isinstance(e, JobFailed | JobCancelled)]
        assert not [t for t in tasks if t.done()], "a worker exited"
        snap = await bot.snapshot()
        assert snap.running == [] and snap.queued == []
        assert await bot.known_jobs() == set()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bot.close(0)


async def test_a_worker_started_before_redis_waits_for_it_and_its_watchers_survive_a_restart(
    server, tmp_path
):
    redis = RedisProcess(persistent=True)  # not started yet
    worker, stop = _worker(redis.url, "early", spec("gated", folder=str(tmp_path))), asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(1.5)
        assert not task.done(), "the worker gave up on a Redis that is not up yet"
        redis.start()
        bot = await _bot(redis.url)
        await bot.submit(_job(1, 10, seed=1))
        await _collect(bot, _started(1))
        await asyncio.to_thread(redis.restart, 0.5)
        # Its heartbeat kept the job (no other worker took it), and its cancel watcher still works.
        assert await bot.cancel(1) == CancelOutcome.STOPPING
        events = await _collect(bot, _finished([1]))
        assert isinstance(events[-1], JobCancelled) and not task.done()
        await bot.close(0)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        redis.close()


async def test_200_jobs_of_20_users_through_two_workers_each_once_and_fairly(server):
    redis = server(False)
    bot = await _bot(redis.url)
    workers = [_worker(redis.url, "w1"), _worker(redis.url, "w2")]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        # Each user queues all of theirs at once, one user after another.
        jobs = {user * 100 + n: user for user in range(20) for n in range(10)}
        for job_id, user in jobs.items():
            await bot.submit(_job(job_id, user, steps=1))
        events = await _collect(bot, _finished(jobs), timeout=20)
        await _settle(bot, events, 0.5)
        assert Counter(e.job_id for e in events if isinstance(e, JobDone)) == dict.fromkeys(jobs, 1)
        # Fair: a user's n-th job starts before anyone's (n+2)-th (two workers may swap neighbours).
        starts = [e.job_id for e in events if isinstance(e, JobStarted)]
        nth = {job_id: job_id % 100 for job_id in jobs}
        for i, job_id in enumerate(starts):
            assert all(nth[later] >= nth[job_id] - 1 for later in starts[i:]), (job_id, starts)
        assert {w.name: w.jobs_done for w in workers}["w1"] > 20, "one worker did all the work"
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bot.close(0)


# --- worker hosts in processes of their own ----------------------------------------------------


class Host:
    """``tests.jobs.worker_host`` in a subprocess, its log in a file."""

    def __init__(self, url: str, name: str, folder: Path, renderer: str = "gated") -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        self._args = [sys.executable, "-m", "tests.jobs.worker_host", url, PREFIX, name, renderer]
        self._args.append(f"folder={folder}")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(*self._args, cwd=ROOT, env=env, stderr=out)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def logged(self, text: str, timeout: float = 20.0) -> None:
        async def wait():
            while text not in self.log.read_text(errors="replace"):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            await self.proc.wait()


async def _owner(url: str, timeout: float = 20.0) -> str:
    """The worker that holds the one running job."""
    client = redis_asyncio.from_url(url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                pending = await client.xpending_range(f"{PREFIX}:jobs", "workers", "-", "+", 10)
                if pending:
                    return pending[0]["consumer"].decode()
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def _owner_changes(url: str, old: str, timeout: float = 20.0) -> str:
    async with asyncio.timeout(timeout):
        while (owner := await _owner(url)) == old:
            await asyncio.sleep(0.05)
    return owner


@pytest.fixture
async def hosts(server, tmp_path):
    redis = server(False)
    pair = [Host(redis.url, "a", tmp_path), Host(redis.url, "b", tmp_path)]
    for host in pair:
        await host.start()
    for host in pair:
        await host.logged("taking jobs", timeout=60)
    yield redis, {h.name: h for h in pair}
    for host in pair:
        await host.close()


async def test_a_stalled_worker_loses_its_job_and_its_late_result_is_discarded(hosts, tmp_path):
    """SIGSTOP past the lease: the other worker finishes the job; the user sees one result and
    ``/queue`` shows the job once, running, until it is done."""
    from lmd_bot.services import ResultView
    from tests.services.conftest import ALICE, running_core

    redis, by_name = hosts
    queue = {"backend": "redis", "redis_url": redis.url, "redis_prefix": PREFIX, "worker_heartbeat_s": 0.3}
    async with running_core(tmp_path, queue=queue, seeds=[7]) as (app, notes):
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        job = plan.job
        first = await _owner(redis.url)

        async def running_ids():
            return [e.job_id for e in (await app.scenes.queue_view(ALICE)).running]

        async with asyncio.timeout(10):  # the bot hears of the start just after Redis does
            while await running_ids() != [job.id]:
                await asyncio.sleep(0.05)
        by_name[first].signal(signal.SIGSTOP)
        rescuer = await _owner_changes(redis.url, first)
        view = await app.scenes.queue_view(ALICE)
        assert [e.job_id for e in view.running] == [job.id] and view.waiting == []
        (tmp_path / "go").touch()  # both renders finish; the stalled host's waits in its pipe
        result = await notes.result_of(job.id)
        assert isinstance(result, ResultView)
        by_name[first].signal(signal.SIGCONT)
        await by_name[first].logged("dropped: another worker holds the job")
        await asyncio.sleep(0.5)
        results = [u for u in notes.for_job(job.id) if isinstance(u, ResultView)]
        assert len(results) == 1
        view = await app.scenes.queue_view(ALICE)
        assert view.running == [] and view.waiting == []
        assert result.job.status.value == "done"
    assert rescuer != first
    assert all(h.proc.returncode is None for h in by_name.values()), "a worker exited"


async def test_a_worker_killed_mid_job_is_replaced_by_the_other(hosts, tmp_path):
    redis, by_name = hosts
    bot = await _bot(redis.url)
    try:
        await bot.submit(_job(1, 10, seed=1))
        events = await _collect(bot, _started(1))
        victim = await _owner(redis.url)
        by_name[victim].signal(signal.SIGKILL)
        assert await _owner_changes(redis.url, victim) != victim
        (tmp_path / "go").touch()
        await _collect(bot, _finished([1]), events)
        await _settle(bot, events, 0.5)
        about_the_job = [type(e) for e in events if not isinstance(e, JobProgress | QueueChanged)]
        assert about_the_job[-3:] == [JobRetrying, JobStarted, JobDone]
        assert sum(isinstance(e, JobDone) for e in events) == 1
        retry = next(e for e in events if isinstance(e, JobRetrying))
        assert retry.attempt == 2 and "another worker" in retry.user_message
    finally:
        await bot.close(0)


async def test_lmd_bot_worker_stops_on_sigterm_while_redis_is_down(tmp_path):
    """An operator stops a worker whose Redis is not there (``docker stop``, Ctrl-C): it used to
    wait for Redis forever, deaf to SIGTERM and SIGINT, until killed."""
    redis = RedisProcess()  # never started: its port refuses connections
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LMD_QUEUE__REDIS_URL": redis.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lmd_bot.cli", "worker", "--renderer", "preview", "--name", "deaf",
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        seen = b""
        while b"unreachable" not in seen:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, f"the worker ended early: {seen.decode()}"
            seen += line
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 20)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
        redis.close()
    assert proc.returncode == 0
    assert b"Traceback" not in rest, rest.decode()


async def test_an_idle_worker_stops_when_told_while_redis_is_gone():
    """Redis goes away while the worker waits for jobs; the worker is told to stop and does."""
    redis = RedisProcess()
    redis.start()
    worker, stop = _worker(redis.url, "idle"), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_s=1))
    try:
        await asyncio.sleep(1.0)  # taking jobs
        assert not task.done()
        redis.close()
        await asyncio.sleep(1.0)  # waiting for Redis
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 15)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        redis.close()


async def test_a_result_finished_while_redis_is_out_of_memory_arrives_once_memory_frees(server, tmp_path):
    """Redis at its ``maxmemory`` refuses writes (OOM) as the render ends. The worker used to lose
    its event publisher to that answer and then wait for it forever, holding the job: the user's
    job never finished. It must wait for memory like for an outage, then deliver the result."""
    redis = server(False)
    bot = await _bot(redis.url)
    worker, stop = _worker(redis.url, "full", spec("gated", folder=str(tmp_path))), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_s=1))
    admin = redis_asyncio.from_url(redis.url)
    try:
        await bot.submit(_job(1, 10, seed=1))
        events = await _collect(bot, _started(1))
        await admin.config_set("maxmemory", "1")  # the default policy, noeviction: writes fail
        (tmp_path / "go").touch()
        await asyncio.sleep(0.5)  # the result is refused meanwhile
        await admin.config_set("maxmemory", "0")
        await _collect(bot, _finished([1]), events, timeout=10)
        await _settle(bot, events, 0.5)
        assert [e.job_id for e in events if isinstance(e, JobDone)] == [1]
        assert not task.done(), "the worker exited"
        await bot.submit(_job(2, 10, seed=2))  # and it takes the next job
        await _collect(bot, _finished([2]), events, timeout=10)
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
        stop.set()
        with contextlib.suppress(TimeoutError):  # a hung worker fails the test, not the run
            await asyncio.wait_for(asyncio.shield(task), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bot.close(0)


async def test_a_wrong_password_or_database_number_is_a_clear_settings_error_at_start(server):
    """An operator's mistyped ``queue.redis_url``: the worker used to retry a refused password
    forever as if Redis were down, and crash with a traceback on a database number the server
    does not have. Both bot and worker must stop at once, naming the setting."""
    redis = server(False)
    admin = redis_asyncio.from_url(redis.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    port = redis.url.split(":")[2].split("/")[0]
    wrong_password = f"redis://:oops@127.0.0.1:{port}/0"
    no_password = f"redis://127.0.0.1:{port}/0"
    wrong_database = f"redis://:s3cret@127.0.0.1:{port}/99"
    for url, says in [(wrong_password, "password"), (no_password, "password"), (wrong_database, "99")]:
        bot = RedisJobQueue(url, prefix=PREFIX, connect_timeout_s=5)
        with pytest.raises(ConfigError) as err:
            await asyncio.wait_for(bot.start(), 10)
        assert "queue.redis_url" in str(err.value) and says in str(err.value), str(err.value)
        assert "oops" not in str(err.value) and "s3cret" not in str(err.value)
        worker = _worker(url, "misconfigured")
        with pytest.raises(ConfigError) as err:
            await asyncio.wait_for(worker.run(asyncio.Event(), grace_s=1), 10)
        assert "queue.redis_url" in str(err.value) and says in str(err.value), str(err.value)


async def test_a_redis_that_may_evict_the_queues_keys_is_a_warning_at_start(server, caplog):
    """A Redis shared with a cache (``maxmemory-policy allkeys-lru``) may evict the jobs stream
    under memory pressure: the jobs in it would never finish, and the users never hear. The bot
    said nothing about it; it warns at start, naming the setting."""
    redis = server(False)
    admin = redis_asyncio.from_url(redis.url)
    await admin.config_set("maxmemory-policy", "allkeys-lru")
    await admin.aclose()
    with caplog.at_level("WARNING", logger="lmd_bot.jobs.redis"):
        bot = await _bot(redis.url)
        await bot.close(0)
    warned = [r.getMessage() for r in caplog.records if "allkeys-lru" in r.getMessage()]
    assert len(warned) == 1 and "noeviction" in warned[0], warned


async def test_a_cancel_while_redis_hangs_gives_up_at_its_deadline(server, tmp_path):
    """Redis stops answering without closing its connections (a network partition, a paused VM).
    A cancel used to wait out the socket timeout of every try, well past its own deadline; it
    must give up at the deadline with the queue's "unavailable" message."""
    redis = server(False)
    bot = RedisJobQueue(redis.url, prefix=PREFIX, heartbeat_s=0.2, cancel_timeout_s=1.0)
    await bot.start()
    worker, stop = _worker(redis.url, "w1", spec("gated", folder=str(tmp_path))), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_s=1))
    try:
        await bot.submit(_job(1, 10, seed=1))
        await _collect(bot, _started(1))
        redis.signal(signal.SIGSTOP)
        started = asyncio.get_running_loop().time()
        with pytest.raises(QueueUnavailableError) as err:
            await bot.cancel(1)
        assert asyncio.get_running_loop().time() - started < 3.0
        assert err.value.user_message.startswith("The render queue is unavailable")
    finally:
        redis.signal(signal.SIGCONT)
        (tmp_path / "go").touch()
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await bot.close(0)
