"""The GPU job queue: fair across users, one worker process per GPU, crash-proof.

The embedded default (:class:`~lmd_bot.jobs.local.LocalJobQueue`) keeps the queue in memory and
runs one worker process here; with ``queue.backend = "redis"`` jobs go through Redis to
``lmd-bot worker`` processes on any host (:mod:`lmd_bot.jobs.redis`). The database remains
the record of every job either way.
"""

from __future__ import annotations

from lmd_bot.config import Settings
from lmd_bot.jobs.base import JobQueue
from lmd_bot.jobs.renderers import RendererSpec, renderer_spec


def build_queue(settings: Settings, spec: RendererSpec | None = None) -> JobQueue:
    """The queue the settings ask for. ``spec`` overrides the worker's renderer (local only)."""
    q = settings.queue
    if q.backend == "redis":
        from lmd_bot.jobs.redis import RedisJobQueue

        return RedisJobQueue(
            q.redis_url, prefix=q.redis_prefix, max_queued=q.max_queued, heartbeat_s=q.worker_heartbeat_s
        )
    from lmd_bot.jobs.local import LocalJobQueue
    from lmd_bot.jobs.supervisor import supervisor_limits

    return LocalJobQueue(spec or renderer_spec(settings), max_queued=q.max_queued, **supervisor_limits(q))
