"""Retries of one LLM request: backoff with jitter, ``retry-after``, all inside our own deadline.

The SDKs' own retry loops are switched off (``max_retries=0``): the Anthropic SDK waits as long
as a ``retry-after`` header says, which could be an hour, while a Discord user waits seconds. Here
a server's ``retry-after`` is honoured only when it ends before our deadline; otherwise we give up
at once with :class:`~lmd_bot.errors.PlannerBusyError` instead of sleeping past it.

Backends signal a transient failure (429, 529, 5xx, 408, 409, a timeout, a dropped connection)
by raising :class:`RetryableError`; anything else they raise is final. Cancellation is never
caught, so a cancelled planning call stops at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from lmd_bot.errors import PlannerBusyError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; the deadline bounds it all."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so that clients
        that failed together do not retry together, yet each waits a minimum."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RetryableError(Exception):
    """A transient failure; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


async def call_with_retries(
    attempt: Callable[[float], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: float,
    attempt_timeout_s: float,
    rng: random.Random,
) -> tuple[T, int]:
    """Run ``attempt(timeout_s)`` until it succeeds; return its result and the number of tries.

    ``deadline`` is in :func:`asyncio.get_running_loop().time` seconds. Each try gets the smaller
    of ``attempt_timeout_s`` and the time left, enforced here too in case a client ignores it.
    """
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise PlannerBusyError("the planner's deadline passed before an answer came")
        timeout = min(attempt_timeout_s, remaining)
        tries += 1
        try:
            async with asyncio.timeout(timeout):
                return await attempt(timeout), tries
        except TimeoutError:
            error = RetryableError(f"no answer within {timeout:.1f} s")
        except RetryableError as exc:
            error = exc
        if tries > policy.max_retries:
            raise PlannerBusyError(f"gave up after {tries} tries; last: {error}")
        delay = policy.backoff(tries, rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if loop.time() + delay >= deadline:
            raise PlannerBusyError(
                f"the next try would start after the deadline (wait {delay:.1f} s); last: {error}"
            )
        log.info("planner request failed (%s); retry %d in %.2f s", error, tries, delay)
        await asyncio.sleep(delay)
