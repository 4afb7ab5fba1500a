"""A throwaway Redis server for tests: ``LMD_TEST_REDIS_URL`` if set, otherwise ``redis-server``
started on a free loopback port with persistence off, as a child that dies with the tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.db.postgres import child_setup

ENV_URL = "LMD_TEST_REDIS_URL"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    if url := os.environ.get(ENV_URL):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "The Redis queue tests need a server: install it (apt-get install redis-server) or set "
            f"{ENV_URL}=redis://host:port/db"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="lmd-test-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=child_setup(),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
