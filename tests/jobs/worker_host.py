"""A Redis worker host in a process of its own, for tests that stop or kill it (SIGSTOP, SIGKILL):
``python -m tests.jobs.worker_host URL PREFIX NAME RENDERER [KEY=VALUE ...]``.

It is the real :class:`~lmd_bot.jobs.redis.RedisWorker` with a supervised GPU worker process; the
renderer is one of :mod:`tests.jobs.renderers` (its keyword arguments follow), so a test can gate
the render. Timings are short so that a lease expires in about a second."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys

from lmd_bot.jobs.redis import RedisWorker
from lmd_bot.jobs.supervisor import WorkerSupervisor
from tests.jobs.renderers import spec

HEARTBEAT_S = 0.3


async def main(url: str, prefix: str, name: str, renderer: str, kwargs: dict[str, str]) -> None:
    def supervisor(emit):
        return WorkerSupervisor(
            spec(renderer, **kwargs), emit=emit, job_timeout_s=60, cancel_grace_s=2, name=name
        )

    worker = RedisWorker(
        url, supervisor, prefix=prefix, name=name, heartbeat_s=HEARTBEAT_S, cancel_poll_s=0.05, max_attempts=3
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.run(stop, grace_s=5)


if __name__ == "__main__":
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # die with the test process
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {sys.argv[3]} %(name)s: %(message)s")
    url, prefix, name, renderer, *rest = sys.argv[1:]
    asyncio.run(main(url, prefix, name, renderer, dict(item.split("=", 1) for item in rest)))
