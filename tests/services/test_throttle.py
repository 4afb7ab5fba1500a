"""One edit per message per interval, newest update wins, results are never overwritten."""

from __future__ import annotations

import asyncio

from lmd_bot.services.tasks import TaskSet
from lmd_bot.services.throttle import EditThrottle


async def test_updates_within_an_interval_coalesce_to_the_newest():
    sent: list[tuple[str, int]] = []

    async def send(key, value):
        sent.append((key, value))

    tasks = TaskSet()
    throttle = EditThrottle(0.3, send, tasks)
    throttle.push("a", 0)
    await asyncio.sleep(0.01)  # delivered at once: nothing was sent for "a" before
    for value in range(1, 10):
        throttle.push("a", value)
    throttle.push("b", 100)
    await throttle.drain()
    assert [v for k, v in sent if k == "a"] == [0, 9]  # the first at once, then only the newest
    assert [v for k, v in sent if k == "b"] == [100]  # other messages are not held up by "a"
    await tasks.close()


async def test_a_final_update_closes_the_key():
    sent: list[int] = []

    async def send(key, value):
        sent.append(value)

    tasks = TaskSet()
    throttle = EditThrottle(0.0, send, tasks)
    throttle.push(1, 1)
    throttle.push(1, 2, final=True)
    throttle.push(1, 3)  # a late progress update after the result
    await throttle.drain()
    throttle.push(1, 4)
    await throttle.drain()
    assert sent[-1] == 2 and 3 not in sent and 4 not in sent
    await tasks.close()


async def test_a_failing_send_does_not_stop_later_updates():
    sent: list[int] = []

    async def send(key, value):
        if value == 1:
            raise RuntimeError("discord said no")
        sent.append(value)

    tasks = TaskSet()
    throttle = EditThrottle(0.0, send, tasks)
    throttle.push("k", 1)
    await asyncio.sleep(0.01)
    throttle.push("k", 2)
    await throttle.drain()
    assert sent == [2]
    await tasks.close()
