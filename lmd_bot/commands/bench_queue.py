"""``lmd-bot bench queue``: the job queues' own cost, with workers that render instantly.

For the in-process queue (one worker process) and the Redis queue (``--workers`` worker hosts,
in this process, each with its own worker process) it prints:

- jobs/s: a burst of ``--jobs`` jobs from ``--users`` users, from the first submit to the last
  result seen by the bot;
- enqueue -> start latency (p50, p99): one job at a time on an idle queue, from ``submit`` to the
  bot seeing the job's start: what the queue adds before a GPU begins.

The Redis queue uses ``--redis-url``, or a private ``redis-server`` started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator


def add_parser(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "queue",
        help="jobs/s and enqueue-to-start latency of the in-process and Redis queues",
        description="Instant workers: jobs/s of a burst and enqueue -> start latency, local and Redis queue.",
    )
    p.add_argument("--jobs", type=int, default=400, help="jobs in the burst (default 400)")
    p.add_argument("--users", type=int, default=20, help="users the burst comes from (default 20)")
    p.add_argument("--samples", type=int, default=200, help="one-at-a-time jobs for latency (default 200)")
    p.add_argument("--workers", type=int, default=2, help="Redis worker hosts (default 2)")
    p.add_argument("--redis-url", help="an existing Redis (default: start a private redis-server)")
    p.set_defaults(func=run)


class _Instant:
    def render(self, request, progress=None, should_cancel=None):
        from PIL import Image

        from lmd_bot.rendering import RenderOutput

        return RenderOutput(image=Image.new("RGB", (8, 8)), seconds=0.0)


def instant_renderer() -> _Instant:
    """The worker process's renderer: an 8x8 black image at once (factory for RendererSpec)."""
    return _Instant()


def _spec():
    from lmd_bot.jobs.renderers import RendererSpec

    return RendererSpec(factory="lmd_bot.commands.bench_queue:instant_renderer", log_level="WARNING")


def _job(job_id: int, user: int):
    from lmd_bot.jobs.models import JobSpec
    from lmd_bot.layout.schema import SceneLayout
    from lmd_bot.rendering import RenderRequest

    layout = SceneLayout.model_validate({"objects": [{"id": 1, "caption": "a cat", "box": [8, 8, 64, 64]}]})
    return JobSpec(job_id=job_id, user_id=user, request=RenderRequest(layout=layout, steps=1))


async def _until(queue, kind, job_id: int) -> None:
    while True:
        event = await queue.next_event()
        if isinstance(event, kind) and event.job_id == job_id:
            return


async def _measure(queue, args: argparse.Namespace, first_id: int) -> tuple[float, list[float]]:
    from lmd_bot.jobs.models import JobDone, JobStarted

    # Warm-up: the worker processes are up and a job went through.
    await queue.submit(_job(first_id, 0))
    await asyncio.wait_for(_until(queue, JobDone, first_id), 300)
    latencies = []
    for i in range(1, args.samples + 1):
        job_id = first_id + i
        start = time.perf_counter()
        await queue.submit(_job(job_id, i % args.users))
        await _until(queue, JobStarted, job_id)
        latencies.append(time.perf_counter() - start)
        await _until(queue, JobDone, job_id)
    burst = range(first_id + args.samples + 1, first_id + args.samples + 1 + args.jobs)
    start = time.perf_counter()
    for job_id in burst:
        await queue.submit(_job(job_id, job_id % args.users))
    done: set[int] = set()
    while len(done) < args.jobs:
        event = await queue.next_event()
        if isinstance(event, JobDone):
            done.add(event.job_id)
    return args.jobs / (time.perf_counter() - start), latencies


@contextlib.asynccontextmanager
async def _private_redis(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    from lmd_bot.jobs.redis.server import RedisServer, RedisServerError

    try:
        server = RedisServer(prefix="lmd-bench-redis-")
        await asyncio.to_thread(server.start)
    except RedisServerError as exc:
        raise SystemExit(f"{exc}; or pass --redis-url") from None
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.close)


async def _local(args: argparse.Namespace) -> tuple[float, list[float]]:
    from lmd_bot.jobs.local import LocalJobQueue

    queue = LocalJobQueue(_spec(), max_queued=args.jobs + 10)
    await queue.start()
    try:
        return await _measure(queue, args, 1)
    finally:
        await queue.close(5)


async def _redis(args: argparse.Namespace) -> tuple[float, list[float]]:
    from lmd_bot.jobs.redis import RedisJobQueue, RedisWorker
    from lmd_bot.jobs.supervisor import WorkerSupervisor

    prefix = f"lmdbench{int(time.time())}"
    async with _private_redis(args.redis_url) as url:

        def supervisor(emit):
            return WorkerSupervisor(_spec(), emit=emit, job_timeout_s=60)

        workers = [
            RedisWorker(url, supervisor, prefix=prefix, name=f"bench-{i}") for i in range(args.workers)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop, grace_s=5)) for w in workers]
        queue = RedisJobQueue(url, prefix=prefix, max_queued=args.jobs + 10)
        await queue.start()
        try:
            return await _measure(queue, args, 1)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close(0)


def _ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> int:
    import logging

    from lmd_bot.errors import LmdError

    if min(args.jobs, args.users, args.workers) < 1 or args.samples < 2:  # a percentile needs two
        raise LmdError("--jobs, --users and --workers must be at least 1, --samples at least 2")
    logging.getLogger("lmd_bot").setLevel(logging.WARNING)
    print(f"{args.jobs} jobs from {args.users} users; latency over {args.samples} jobs on an idle queue")  # noqa: T201
    print(f"{'queue':<24} {'jobs/s':>8} {'start p50 ms':>13} {'start p99 ms':>13}")  # noqa: T201
    for name, bench in (("in-process, 1 worker", _local), (f"redis, {args.workers} workers", _redis)):
        rate, latencies = asyncio.run(bench(args))
        print(f"{name:<24} {rate:>8.0f} {_ms(latencies, 50):>13.1f} {_ms(latencies, 99):>13.1f}")  # noqa: T201
    return 0
