"""``lmd-bot worker``: a GPU worker host for the Redis-backed queue (``queue.backend = "redis"``).

Run one per GPU, on any machine that reaches the Redis server (``queue.redis_url``); the bot runs
with the same settings and no GPU of its own. Each worker takes one job at a time, renders it in a
supervised child process (restarted after a crash or out-of-memory error) and publishes progress
and results back through Redis. Ctrl+C or SIGTERM: stop taking jobs, let the current one finish
within ``queue.shutdown_grace_s``, else give it back for another worker. Redis down at start or
restarted meanwhile: the worker waits for it (one log line) and carries on. Models that cannot
load, a wrong password or database in ``queue.redis_url``, or another worker of the same name:
it exits with code 2 and the reason, taking no job.
"""

from __future__ import annotations

import argparse
import asyncio
import signal


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="a GPU worker for the Redis-backed queue (scale out)",
        description=(
            "Render the bot's jobs on this host: one worker per GPU, taking jobs from the Redis "
            "server of queue.redis_url (LMD_QUEUE__REDIS_URL) under queue.redis_prefix "
            "(LMD_QUEUE__REDIS_PREFIX), both as the bot has them, with the models of [diffusion]. "
            "Redis down: it waits for it. SIGTERM or Ctrl+C: the current job gets "
            "queue.shutdown_grace_s to finish, else goes back to another worker; exit 0. A refused "
            "password or database, models that cannot load, or another worker of the same name: "
            "exit 2 with the reason."
        ),
    )
    p.add_argument(
        "--renderer",
        choices=("diffusion", "tiny", "preview"),
        help="override queue.renderer (preview: no GPU, draws the plan)",
    )
    p.add_argument("--name", help="this worker's name in logs and /queue (default: host-pid)")
    p.set_defaults(func=run)


async def _main(args: argparse.Namespace) -> None:
    from lmd_bot.config import load_settings
    from lmd_bot.jobs.redis import RedisWorker
    from lmd_bot.jobs.renderers import renderer_spec
    from lmd_bot.jobs.supervisor import WorkerSupervisor, supervisor_limits

    settings = load_settings(**({"queue": {"renderer": args.renderer}} if args.renderer else {}))
    q = settings.queue
    spec = renderer_spec(settings)

    def supervisor(emit):
        return WorkerSupervisor(spec, emit=emit, name=args.name or "redis", **supervisor_limits(q))

    worker = RedisWorker(
        q.redis_url,
        supervisor,
        prefix=q.redis_prefix,
        name=args.name,
        heartbeat_s=q.worker_heartbeat_s,
        max_attempts=q.max_attempts,
        # Previews only as often as the bot edits a status message.
        progress_interval_s=settings.discord.status_edit_interval_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop, grace_s=q.shutdown_grace_s)


def run(args: argparse.Namespace) -> int:
    asyncio.run(_main(args))
    return 0
