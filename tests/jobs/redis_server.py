"""Throwaway Redis servers for tests: ``LMD_TEST_REDIS_URL`` if set, otherwise ``redis-server``
started on a free loopback port, as a child that dies with the tests.

:class:`RedisProcess` is a private server a test may kill and start again on the same port, with
persistence (append-only file: the data survives) or without (a restart loses everything)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.db.postgres import child_setup

ENV_URL = "LMD_TEST_REDIS_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    def __init__(self, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "The Redis queue tests need a server: install it (apt-get install redis-server) or set "
                f"{ENV_URL}=redis://host:port/db"
            )
        self._binary = binary
        self.port = _free_port()
        self.folder = tempfile.mkdtemp(prefix="lmd-test-redis-")
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        self._proc = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *persistence,
                "--dir",
                self.folder,
            ],
            stdout=subprocess.DEVNULL,
            preexec_fn=child_setup(),
        )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline or self._proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """Gone at once, as a crash: no shutdown save."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


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
