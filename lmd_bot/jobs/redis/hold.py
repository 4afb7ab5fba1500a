"""One bot per queue prefix and one worker per name: a hold in Redis that its holder renews on
every heartbeat and lets go of when it stops.

Two bots on one prefix would split the job events between them (each reading some of the other's
results), and two workers with one name would count as one (the bot hands them a single job at a
time). So a second one is refused with a :class:`~lmd_bot.errors.ConfigError` naming the setting to
change; a hold left by a crashed holder runs out within its expiry, which a newcomer waits out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from lmd_bot.errors import ConfigError
from lmd_bot.jobs.redis.link import Link
from lmd_bot.jobs.redis.scripts import Scripts

log = logging.getLogger(__name__)


class Hold:
    def __init__(self, link: Link, scripts: Scripts, key: str, expiry_s: float) -> None:
        self._link = link
        self._scripts = scripts
        self.key = key
        self._expiry_ms = max(1, int(expiry_s * 1000))
        self._token = uuid.uuid4().hex
        self._lost = False

    async def take(self, refused: str) -> None:
        """Take the hold. One still held after the expiry it had when first seen is renewed by a
        live holder: raises ``ConfigError(refused)``."""
        give_up: float | None = None
        while not await self._scripts.hold(keys=[self.key], args=[self._token, self._expiry_ms]):
            left_ms = max(0, await self._link.client.pttl(self.key))
            if give_up is None:
                give_up = time.monotonic() + left_ms / 1000 + 0.5
                log.warning(
                    "%s is held by another process; waiting up to %.1f s in case it is a stopped one's",
                    self.key,
                    left_ms / 1000 + 0.5,
                )
            elif time.monotonic() > give_up:
                raise ConfigError(refused)
            await asyncio.sleep(0.1)

    async def renew(self) -> None:
        """Renew it (retaken if Redis lost it); logs once if another process took it meanwhile."""
        held = await self._scripts.hold(keys=[self.key], args=[self._token, self._expiry_ms])
        if not held and not self._lost:
            log.error("%s was taken by another process while this one was cut off from redis", self.key)
        self._lost = not held

    async def let_go(self) -> None:
        await self._scripts.let_go(keys=[self.key], args=[self._token])
