"""A throwaway PostgreSQL server for tests: ``LMD_TEST_POSTGRES_URL`` if set (an async URL,
``postgresql+asyncpg://…``), otherwise a private server started from the installed binaries in a
temporary folder. It runs as the ``postgres`` user when the tests run as root (initdb refuses
root), in the foreground as a child of the test process, and dies with it even when the tests are
killed."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ENV_URL = "LMD_TEST_POSTGRES_URL"
_PR_SET_PDEATHSIG = 1


def child_setup(user: str | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: become ``user`` (if given), then ask Linux to end this process when the
    test process dies (set after the user change, which would clear it)."""

    def setup() -> None:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _binary(name: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepting(pg_isready: str | None, port: int) -> bool:
    if pg_isready is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False
    probe = subprocess.run([pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port)], check=False)
    return probe.returncode == 0


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a server URL (without a database name)."""
    if url := os.environ.get(ENV_URL):
        yield url.rsplit("/", 1)[0]
        return
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if not (initdb and postgres):
        pytest.fail(
            "The PostgreSQL tests need a server: install it (apt-get install postgresql) or set "
            f"{ENV_URL}=postgresql+asyncpg://user@host:port/db"
        )
    # Not under pytest's tmp_path: that is private to root, and the server may run as another user.
    folder = Path(tempfile.mkdtemp(prefix="lmd-test-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(folder, user)
    data, port = folder / "data", _free_port()
    subprocess.run(
        [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        preexec_fn=child_setup(user),
    )
    options = ["-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    server = subprocess.Popen(
        [postgres, "-D", str(data), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_setup(user),
    )
    try:
        # An open port is not enough: a loaded machine answers "the database system is starting
        # up" for a while after the socket listens. Wait until the server accepts a session.
        ready = _binary("pg_isready")
        deadline = time.monotonic() + 60
        while not _accepting(ready, port):
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("the PostgreSQL test server did not start")
            time.sleep(0.05)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGQUIT)  # immediate shutdown: nothing here needs to be kept
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
