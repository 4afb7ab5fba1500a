"""At most one edit per message per interval; the newest pending update wins.

Discord rate-limits message edits, and people cannot read a status that changes faster than every
few seconds anyway. Updates for one key are delivered in order, one at a time; a final update
(the result) replaces anything pending and closes the key, so a late progress update can never
overwrite a result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from lmd_bot.services.tasks import TaskSet

log = logging.getLogger(__name__)

_CLOSED_KEYS_KEPT = 4096


@dataclass
class _Slot:
    last_sent: float = float("-inf")
    pending: Any = None
    has_pending: bool = False
    final: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class EditThrottle:
    def __init__(
        self,
        interval_s: float,
        send: Callable[[Hashable, Any], Awaitable[None]],
        tasks: TaskSet,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_s
        self._send = send
        self._tasks = tasks
        self._clock = clock
        self._slots: dict[Hashable, _Slot] = {}
        self._closed: OrderedDict[Hashable, None] = OrderedDict()

    def push(self, key: Hashable, value: Any, *, final: bool = False) -> None:
        if key in self._closed:
            return
        slot = self._slots.setdefault(key, _Slot())
        if slot.final:
            return
        slot.pending, slot.has_pending, slot.final = value, True, final
        if slot.task is None:
            slot.task = self._tasks.spawn(self._run(key, slot), name=f"edit-{key}")

    async def _run(self, key: Hashable, slot: _Slot) -> None:
        while slot.has_pending:
            wait = slot.last_sent + self._interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            value, slot.pending, slot.has_pending = slot.pending, None, False
            closing = slot.final and not slot.has_pending
            try:
                await self._send(key, value)
            except Exception:
                log.exception("update %s failed", key)
            slot.last_sent = self._clock()
            if closing:
                break
        slot.task = None
        if slot.final and not slot.has_pending:
            del self._slots[key]
            self._closed[key] = None
            while len(self._closed) > _CLOSED_KEYS_KEPT:
                self._closed.popitem(last=False)

    async def drain(self) -> None:
        """Wait until every pending update is sent (shutdown, tests)."""
        while tasks := [s.task for s in self._slots.values() if s.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)
