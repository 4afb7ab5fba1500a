"""A private ``redis-server`` on a free loopback port, for ``lmd-bot bench queue`` and the tests.

It keeps no snapshot; with ``persistent`` it keeps an append-only file written on every command,
so its data survives :meth:`RedisServer.kill` and a start on the same port (a crash), and without
it a restart loses everything.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

START_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    """``redis-server`` is not installed, or did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(
        self,
        *,
        persistent: bool = False,
        prefix: str = "lmd-redis-",
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
        self._binary = binary
        self._preexec_fn = preexec_fn
        self.port = _free_port()
        self.folder = tempfile.mkdtemp(prefix=prefix)
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait (blocking) until it takes connections."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        fresh = ["--save", "", "--appendonly", "no"]  # no snapshots; the file only if persistent
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder]
        self._proc = subprocess.Popen(
            [self._binary, *where, *fresh, *persistence],
            stdout=subprocess.DEVNULL,
            preexec_fn=self._preexec_fn,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RedisServerError(f"redis-server did not start on port {self.port}")
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
