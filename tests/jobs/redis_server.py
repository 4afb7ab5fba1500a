"""Throwaway Redis servers for tests: ``LMD_TEST_REDIS_URL`` if set, otherwise ``redis-server``
started on a free loopback port, as a child that dies with the tests.

:class:`RedisProcess` is a private server a test may kill and start again on the same port, with
persistence (append-only file: the data survives) or without (a restart loses everything)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from lmd_bot.jobs.redis.server import RedisServer, RedisServerError
from tests.db.postgres import child_setup

ENV_URL = "LMD_TEST_REDIS_URL"


class RedisProcess(RedisServer):
    """A test's own server, ended with the tests; a missing or failed ``redis-server`` fails the
    test with what to install."""

    def __init__(self, *, persistent: bool = False) -> None:
        try:
            super().__init__(persistent=persistent, prefix="lmd-test-redis-", preexec_fn=child_setup())
        except RedisServerError as exc:
            pytest.fail(f"The Redis queue tests need a server: {exc}, or set {ENV_URL}=redis://host:port/db")

    def start(self) -> None:
        try:
            super().start()
        except RedisServerError as exc:
            pytest.fail(str(exc))

    def signal(self, signum: int) -> None:
        """SIGSTOP: a server that stops answering but keeps its connections open; SIGCONT."""
        self._proc.send_signal(signum)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    if url := os.environ.get(ENV_URL):
        yield url
        return
    server = RedisProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.close()
