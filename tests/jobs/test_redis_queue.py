"""The Redis-backed queue against a real redis-server: fairness, cancellation, lost worker hosts,
events across a bot restart, and the ``lmd-bot worker`` command. Faults (Redis restarts, stalled
and killed workers) are in ``test_redis_faults``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from lmd_bot.errors import ConfigError, LmdError
from lmd_bot.jobs.models import (
    CancelOutcome,
    JobCancelled,
    JobDone,
    JobFailed,
    JobRetrying,
    JobSpec,
    JobStarted,
    QueueFullError,
)
from lmd_bot.jobs.redis import QueueUnavailableError, RedisJobQueue, RedisWorker
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.jobs.supervisor import WorkerSupervisor
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderRequest
from tests.jobs.renderers import spec

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = SceneLayout.model_validate({"objects": [{"id": 1, "caption": "a cat", "box": [10, 10, 100, 100]}]})
PREVIEW = RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer")


def _job(job_id: int, user: int, seed: int = 0) -> JobSpec:
    return JobSpec(job_id=job_id, user_id=user, request=RenderRequest(layout=LAYOUT, seed=seed, steps=2))


def _worker(url, prefix, renderer=PREVIEW, name="w1"):
    def supervisor(emit):
        return WorkerSupervisor(renderer, emit=emit, job_timeout_s=30, cancel_grace_s=2, name=name)

    return RedisWorker(
        url, supervisor, prefix=prefix, name=name, heartbeat_s=0.2, cancel_poll_s=0.05, block_s=0.2
    )


async def _bot(url, prefix, **kw) -> RedisJobQueue:
    queue = RedisJobQueue(url, prefix=prefix, heartbeat_s=0.2, **kw)
    await queue.start()
    return queue


async def _collect(queue, until, timeout=20.0):
    events = []
    while not until(events):
        events.append(await asyncio.wait_for(queue.next_event(), timeout))
    return events


def _done(ids):
    return lambda events: {e.job_id for e in events if isinstance(e, JobDone | JobFailed)} >= set(ids)


async def test_jobs_interleave_across_users_and_run_on_a_worker_host(redis_url, prefix):
    bot = await _bot(redis_url, prefix)
    for job_id, user in [(1, 10), (2, 10), (3, 10), (4, 20)]:
        await bot.submit(_job(job_id, user))
    await bot.submit(_job(1, 10))  # a duplicate is ignored
    snap = await bot.snapshot()
    assert [j.job_id for j in snap.queued] == [1, 4, 2, 3] and snap.running == []
    assert await bot.known_jobs() == {1, 2, 3, 4}
    worker, stop = _worker(redis_url, prefix), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        events = await _collect(bot, _done([1, 2, 3, 4]))
        started = [e.job_id for e in events if isinstance(e, JobStarted)]
        assert started == [1, 4, 2, 3]
        assert all(e.png.startswith(b"\x89PNG") for e in events if isinstance(e, JobDone))
        assert await bot.known_jobs() == set()
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_cancel_waiting_and_running_jobs_and_the_whole_queue_cap(redis_url, prefix, tmp_path):
    bot = await _bot(redis_url, prefix, max_queued=2)
    await bot.submit(_job(1, 10))
    await bot.submit(_job(2, 11))
    with pytest.raises(QueueFullError):
        await bot.submit(_job(3, 12))
    worker, stop = _worker(redis_url, prefix, spec("gated", folder=str(tmp_path))), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await _collect(bot, lambda ev: any(isinstance(e, JobStarted) for e in ev))
        assert await bot.cancel(2) == CancelOutcome.REMOVED
        assert await bot.cancel(2) == CancelOutcome.UNKNOWN
        assert await bot.cancel(1) == CancelOutcome.STOPPING
        events = await _collect(bot, lambda ev: any(isinstance(e, JobCancelled) for e in ev))
        assert [e.job_id for e in events if isinstance(e, JobCancelled)] == [1]
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_a_lost_worker_host_is_noticed_and_its_job_retried_elsewhere(redis_url, prefix, tmp_path):
    bot = await _bot(redis_url, prefix)
    doomed = _worker(redis_url, prefix, spec("hang", folder=str(tmp_path)), name="doomed")
    doomed_task = asyncio.create_task(doomed.run(asyncio.Event()))
    await bot.submit(_job(1, 10))
    await _collect(bot, lambda ev: any(isinstance(e, JobStarted) for e in ev))
    # The host dies: no more heartbeats, and its GPU process goes with it.
    doomed_task.cancel()
    await asyncio.gather(doomed_task, return_exceptions=True)
    assert doomed.supervisor.worker_pid is None
    rescuer, stop = _worker(redis_url, prefix, name="rescuer"), asyncio.Event()
    running = asyncio.create_task(rescuer.run(stop))
    try:
        events = await _collect(bot, _done([1]))
        retry = next(e for e in events if isinstance(e, JobRetrying))
        assert retry.attempt == 2 and "another worker" in retry.user_message
        assert isinstance(events[-1], JobDone)
        assert next(e for e in events if isinstance(e, JobStarted)).attempt == 2
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_a_job_finished_while_the_bot_was_down_reaches_it_after_it_starts(redis_url, prefix, tmp_path):
    worker, stop = _worker(redis_url, prefix, spec("gated", folder=str(tmp_path))), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    bot = await _bot(redis_url, prefix)
    await bot.submit(_job(1, 10, seed=1))
    await _collect(bot, lambda ev: any(isinstance(e, JobStarted) for e in ev))
    await bot.close(0)  # the bot stops; the job goes on rendering on its worker
    (tmp_path / "go").touch()
    while worker.jobs_done < 1:
        await asyncio.sleep(0.05)
    bot = await _bot(redis_url, prefix)
    try:
        # Its result waits unread: the job is still the queue's, not one to submit again.
        assert await bot.known_jobs() == {1}
        events = await _collect(bot, _done([1]))
        assert isinstance(events[-1], JobDone) and events[-1].job_id == 1
        assert await bot.known_jobs() == set()
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_a_restarted_bot_knows_the_jobs_its_workers_hold(redis_url, prefix, tmp_path):
    worker, stop = _worker(redis_url, prefix, spec("gated", folder=str(tmp_path))), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    bot = await _bot(redis_url, prefix)
    await bot.submit(_job(1, 10, seed=1))
    await bot.submit(_job(2, 11, seed=2))
    await _collect(bot, lambda ev: any(isinstance(e, JobStarted) for e in ev))
    await bot.close(0)
    bot = await _bot(redis_url, prefix)
    try:
        # Job 1 is on the worker; job 2 waited in the old bot only (the service resubmits it from
        # the database).
        assert await bot.known_jobs() == {1}
        assert [j.job_id for j in (await bot.snapshot()).running] == [1]
        (tmp_path / "go").touch()
        await _collect(bot, _done([1]))
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_an_unreachable_redis_is_a_clear_error():
    bot = RedisJobQueue("redis://127.0.0.1:1/0", prefix="x", connect_timeout_s=0.5)
    with pytest.raises(QueueUnavailableError) as err:
        await bot.start()
    assert err.value.user_message.startswith("The render queue is unavailable")
    assert "queue.redis_url" in str(err.value)


async def test_lmd_bot_worker_command_serves_the_queue_and_stops_on_sigterm(redis_url, prefix):
    bot = await _bot(redis_url, prefix)
    # PYTHONPATH: this checkout's code, whichever checkout the installed command points at.
    env = {
        **os.environ,
        "LMD_QUEUE__REDIS_URL": redis_url,
        "LMD_QUEUE__REDIS_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        Path(sys.executable).parent / "lmd-bot",
        "worker",
        "--renderer",
        "preview",
        "--name",
        "cli-worker",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await bot.submit(_job(1, 10))
        events = await _collect(bot, _done([1]), timeout=60)
        started = next(e for e in events if isinstance(e, JobStarted))
        assert started.worker == "cli-worker" and isinstance(events[-1], JobDone)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        await bot.close(0)
    assert proc.returncode == 0, stderr.decode()[-2000:]


async def test_the_scene_service_runs_on_the_redis_queue(redis_url, prefix, tmp_path):
    """queue.backend = "redis": the bot has no GPU of its own; a worker host renders its scenes."""
    from lmd_bot.services import ResultView
    from tests.services.conftest import ALICE, running_core

    queue = {"backend": "redis", "redis_url": redis_url, "redis_prefix": prefix, "worker_heartbeat_s": 0.2}
    worker, stop = _worker(redis_url, prefix), asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with running_core(tmp_path, queue=queue) as (app, notes):
            assert isinstance(app.queue, RedisJobQueue)
            plan = await app.scenes.imagine(ALICE, "a red apple", notes, seed=5)
            result = await notes.result_of(plan.job.id)
            assert isinstance(result, ResultView) and result.image_png.startswith(b"\x89PNG")
            assert result.job.seed == 5
    finally:
        stop.set()
        await running


async def test_a_second_bot_on_the_same_queue_is_refused_until_the_first_one_is_gone(redis_url, prefix):
    """Two bots on one prefix (a staging bot left on the production Redis) used to share the
    events: each read about half of the other's results, so users never got theirs and a bot could
    take another's result for its own job of the same id. The second must refuse to start, naming
    the setting; once the first stops, or a crashed one's hold runs out, it starts."""
    first = await _bot(redis_url, prefix)
    try:
        second = RedisJobQueue(redis_url, prefix=prefix, heartbeat_s=0.2)
        with pytest.raises(ConfigError) as err:
            await asyncio.wait_for(second.start(), 10)
        assert "queue.redis_prefix" in str(err.value) and prefix in str(err.value)
        # The first one is unharmed: its jobs still run.
        worker, stop = _worker(redis_url, prefix), asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await first.submit(_job(1, 10))
        assert isinstance((await _collect(first, _done([1])))[-1], JobDone)
        stop.set()
        await running
    finally:
        await first.close(0)
    second = await _bot(redis_url, prefix)  # a bot stopped cleanly lets go at once
    await second.close(0)
    # What a killed bot leaves: a hold that runs out by itself; the next bot waits it out.
    admin = redis_asyncio.from_url(redis_url)
    await admin.set(f"{prefix}:bot", "crashed", px=500)
    await admin.aclose()
    third = await asyncio.wait_for(_bot(redis_url, prefix), 10)
    await third.close(0)


async def test_a_second_worker_with_the_same_name_is_refused(redis_url, prefix):
    """Two workers started with one ``--name`` used to count as one: the bot handed them one job at
    a time and the second GPU sat idle, with nothing in any log."""
    bot = await _bot(redis_url, prefix)
    first, stop = _worker(redis_url, prefix, name="gpu0"), asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    try:
        await bot.submit(_job(1, 10))
        await _collect(bot, _done([1]))
        twin = _worker(redis_url, prefix, name="gpu0")
        with pytest.raises(ConfigError) as err:
            await asyncio.wait_for(twin.run(asyncio.Event(), grace_s=1), 10)
        assert "gpu0" in str(err.value) and "--name" in str(err.value)
        assert not running.done()
        await bot.submit(_job(2, 10))  # the first worker still serves the queue
        await _collect(bot, _done([2]))
    finally:
        stop.set()
        await running
        await bot.close(0)


async def test_a_waiting_jobs_eta_counts_every_busy_worker(redis_url, prefix, tmp_path):
    """Two workers render two jobs; the next one waits for the first of them to end: about one
    render's time. Its status used to count each running job as a whole render ahead of it (two
    here, N with N workers), as if a single GPU ran them one after another."""
    from lmd_bot.services import ResultView, StatusView
    from tests.services.conftest import ALICE, BOB, running_core

    carol, dave = (ALICE.model_copy(update={"user_id": n}) for n in (4, 5))
    (tmp_path / "go-1").touch()  # the first job finishes at once: the bot learns a render's time
    gated = spec("gated", folder=str(tmp_path))
    workers = [_worker(redis_url, prefix, gated, name=n) for n in ("gpu0", "gpu1")]
    stop = asyncio.Event()
    running = [asyncio.create_task(w.run(stop)) for w in workers]
    queue = {"backend": "redis", "redis_url": redis_url, "redis_prefix": prefix, "worker_heartbeat_s": 0.2}
    try:
        async with running_core(tmp_path, queue=queue, seeds=[1, 2, 3, 4]) as (app, notes):
            first = (await app.scenes.imagine(ALICE, "a red apple", notes)).job
            assert isinstance(await notes.result_of(first.id), ResultView)
            per_render = (await app.scenes.queue_view(ALICE)).eta_per_job_s
            assert per_render is not None
            busy = [(await app.scenes.imagine(who, "a blue cup", notes)).job for who in (BOB, carol)]
            for job in busy:
                await notes.wait_for(lambda u, j=job: (u.job.id, getattr(u, "state", 0)) == (j.id, "running"))
            waiting = (await app.scenes.imagine(dave, "a green pear", notes)).job
            status = await notes.wait_for(
                lambda u: u.job.id == waiting.id and isinstance(u, StatusView) and u.state == "queued"
            )
            assert (status.position, status.waiting) == (1, 1)
            assert status.eta_s == pytest.approx(per_render)
            (tmp_path / "go").touch()
            assert isinstance(await notes.result_of(waiting.id), ResultView)
    finally:
        (tmp_path / "go").touch()
        stop.set()
        await asyncio.gather(*running)


async def test_a_worker_whose_models_cannot_load_stops_instead_of_failing_the_fleets_jobs(redis_url, prefix):
    """One host of two cannot load its models (no CUDA device). It used to register anyway and
    fail every job it took at once; being free again at once, it took most of them, so users got
    errors while the other GPU stood idle. It must stop with its error and leave the jobs to the
    healthy worker."""
    bot = await _bot(redis_url, prefix)
    broken = _worker(redis_url, prefix, spec("broken"), name="broken")
    healthy, stop = _worker(redis_url, prefix, name="healthy"), asyncio.Event()
    await bot.submit(_job(1, 10))
    await bot.submit(_job(2, 11))
    broken_task = asyncio.create_task(broken.run(stop))
    running = asyncio.create_task(healthy.run(stop))
    try:
        with pytest.raises(LmdError) as err:
            await asyncio.wait_for(asyncio.shield(broken_task), 20)
        assert "no CUDA device" in str(err.value)
        events = await _collect(bot, _done([1, 2]))
        assert not [e for e in events if isinstance(e, JobFailed)]
        assert {e.worker for e in events if isinstance(e, JobStarted)} == {"healthy"}
    finally:
        stop.set()
        await asyncio.gather(broken_task, running, return_exceptions=True)
        await bot.close(0)


async def test_jobs_waiting_with_no_worker_at_all_are_logged_once_for_the_operator(redis_url, prefix, caplog):
    """The bot on Redis with no ``lmd-bot worker`` running (none started, or all stopped): jobs
    used to wait without a word in any log. The operator gets one warning, and one line when a
    worker takes the jobs."""
    bot = await _bot(redis_url, prefix)
    worker, stop = _worker(redis_url, prefix), asyncio.Event()
    try:
        with caplog.at_level("INFO", logger="lmd_bot.jobs.redis"):
            await bot.submit(_job(1, 10))
            await bot.submit(_job(2, 11))
            await asyncio.sleep(1.0)  # five dispatcher rounds
            warnings = [r.getMessage() for r in caplog.records if "no worker" in r.getMessage()]
            assert len(warnings) == 1 and "lmd-bot worker" in warnings[0], warnings
            assert "2 job(s)" in warnings[0]
            assert not (await bot.snapshot()).serving  # what waiting users' statuses say
            running = asyncio.create_task(worker.run(stop))
            await _collect(bot, _done([1, 2]))
        assert any("worker is serving" in r.getMessage() for r in caplog.records)
        assert (await bot.snapshot()).serving
        stop.set()
        await running
    finally:
        stop.set()
        await bot.close(0)


def test_lmd_bot_worker_help_says_where_it_connects_and_how_it_stops(capsys):
    """``lmd-bot worker --help`` listed two flags and nothing on what the worker reads: the
    operator of a new GPU host could not learn there how to point it at the bot's Redis."""
    from lmd_bot.cli import build_parser

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["worker", "--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for needed in ("queue.redis_url", "LMD_QUEUE__REDIS_URL", "queue.redis_prefix", "SIGTERM", "exit"):
        assert needed in shown, needed


async def test_a_job_cancelled_while_its_worker_host_is_lost_ends_cancelled_not_retried(
    redis_url, prefix, tmp_path
):
    """The owner cancels while the job's host is dead ("Stopping the render…"). The worker that
    took the job over used to announce a retry ("I'm retrying on another worker"), or fail it as
    crashed past its last try, before seeing the cancel: the owner must just see it cancelled."""
    bot = await _bot(redis_url, prefix)
    doomed = _worker(redis_url, prefix, spec("hang", folder=str(tmp_path)), name="doomed")
    doomed_task = asyncio.create_task(doomed.run(asyncio.Event()))
    await bot.submit(_job(1, 10))
    await _collect(bot, lambda ev: any(isinstance(e, JobStarted) for e in ev))
    doomed_task.cancel()  # the host dies with the job
    await asyncio.gather(doomed_task, return_exceptions=True)
    assert await bot.cancel(1) == CancelOutcome.STOPPING
    rescuer, stop = _worker(redis_url, prefix, name="rescuer"), asyncio.Event()
    running = asyncio.create_task(rescuer.run(stop))
    try:
        events = await _collect(
            bot, lambda ev: any(isinstance(e, JobCancelled | JobDone | JobFailed) for e in ev)
        )
        assert isinstance(events[-1], JobCancelled), events
        assert not [e for e in events if isinstance(e, JobRetrying)], events
    finally:
        stop.set()
        await running
        await bot.close(0)
