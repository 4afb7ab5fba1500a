"""One Redis connection that waits out outages: a restart, a failover, a server not up yet.

Every call the queue makes goes through :meth:`Link.call`, which retries connection errors, and a
server that refuses writes for now (out of memory, a read-only replica), with exponential backoff.
An outage is logged once when it starts and once when it ends, however many tasks are waiting on
it; other errors Redis itself answers (a script bug, ``NOGROUP``) are not retried here: the caller
knows what they mean.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as redis_asyncio
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lmd_bot.errors import ConfigError, LmdError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "the server is not there right now" (redis-py's BusyLoadingError, a server
# still loading its data after a restart, is a ConnectionError).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# Answers that mean "there, but taking no writes right now": full (maxmemory with noeviction), a
# replica (a failover in progress), cut off from its primary. Waited out like an outage: a caller
# that got one would otherwise lose what it was writing (a worker, its finished job's result).
REFUSING = (OutOfMemoryError, ReadOnlyError, MasterDownError, TryAgainError)
TRANSIENT = UNREACHABLE + REFUSING


class QueueUnavailableError(LmdError):
    user_message = "The render queue is unavailable right now; try again in a minute."


def _settings_error(exc: Exception, url: str) -> ConfigError | None:
    """A refusal that no wait mends when the first call gets it: ``queue.redis_url`` is wrong."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError | NoPermissionError):
        return ConfigError(f"queue.redis_url: redis at {where(url)} refused the password or user: {exc}")
    if isinstance(exc, ResponseError) and "DB index" in str(exc):
        database = urlsplit(url).path.lstrip("/")
        return ConfigError(f"queue.redis_url: redis at {where(url)} has no database {database}: {exc}")
    return None


def where(url: str) -> str:
    """The server's address for logs: the URL without its password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def _reraise_swallowed_cancel(task: asyncio.Task[Any] | None) -> None:
    # redis-py may turn a cancellation that lands mid-command into a connection error, or finish
    # the command and drop it: a loop cancelled at that moment would then run forever.
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Link:
    def __init__(self, url: str, *, block_s: float = 1.0, max_backoff_s: float = 2.0) -> None:
        try:
            # A blocking read waits block_s on the server: the socket timeout leaves room for it.
            self.client: Any = redis_asyncio.from_url(
                url,
                decode_responses=False,
                socket_connect_timeout=2.0,
                socket_timeout=block_s + 5.0,
                health_check_interval=15,
            )
        except ValueError as exc:
            raise ConfigError(f"queue.redis_url: {exc}") from None
        self._url = url
        self.where = where(url)
        # Until a first call succeeds, a refused password or database is a settings error; later
        # (a password rotated while running) it is waited out like an outage.
        self.connected = False
        self._max_backoff_s = max_backoff_s
        self._down_since: float | None = None
        self._closed = False

    async def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, deadline_s: float | None = None, **kwargs: Any
    ) -> T:
        """``await fn(*args, **kwargs)``, again and again while Redis is unreachable. With
        ``deadline_s``, gives up after that long with :class:`QueueUnavailableError`. Before a first
        call succeeds, a refused password or database raises :class:`ConfigError`."""
        give_up = None if deadline_s is None else time.monotonic() + deadline_s
        delay = 0.05
        task = asyncio.current_task()
        while True:
            try:
                # A server that stops answering but keeps the connection (a partition) would hold
                # each try for the socket timeout: a deadline bounds the try itself.
                left = None if give_up is None else max(give_up - time.monotonic(), 0.0)
                async with asyncio.timeout(left):
                    result = await fn(*args, **kwargs)
            except Exception as exc:
                _reraise_swallowed_cancel(task)
                if not self.connected and (error := _settings_error(exc, self._url)) is not None:
                    raise error from None
                if not isinstance(exc, TRANSIENT):
                    raise
                if self._closed:
                    raise QueueUnavailableError(f"redis link closed: {exc}") from None
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    state = "refuses writes" if isinstance(exc, REFUSING) else "unreachable"
                    log.warning("redis at %s %s (%s); retrying until it is back", self.where, state, exc)
                if give_up is not None and time.monotonic() + delay > give_up:
                    raise QueueUnavailableError(f"redis at {self.where} unreachable: {exc}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            _reraise_swallowed_cancel(task)
            self.connected = True
            if self._down_since is not None:
                log.info("redis at %s is back after %.1f s", self.where, time.monotonic() - self._down_since)
                self._down_since = None
            return result

    async def close(self) -> None:
        self._closed = True
        await self.client.aclose()
