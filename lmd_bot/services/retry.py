"""Trying a step again while the disk or the database is busy (the render tracker's last steps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

# Waits before each retry of a job's last steps (saving, recording, delivering).
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)

T = TypeVar("T")


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    errors: type[Exception],
    what: str,
    *,
    unless: type[Exception] | None = None,
) -> T:
    """``attempt()``, tried again after each of RETRY_DELAYS_S while it raises ``errors``
    (but not ``unless``)."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return await attempt()
        except errors as exc:
            if delay is None or (unless is not None and isinstance(exc, unless)):
                raise
            log.warning("%s failed (%s); trying again in %.2f s", what, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
