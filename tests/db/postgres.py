"""A throwaway PostgreSQL server for tests: ``LMD_TEST_POSTGRES_URL`` if set (an async URL,
``postgresql+asyncpg://…``), otherwise a private server started from the installed binaries in a
temporary folder (as the ``postgres`` user when the tests run as root, which initdb refuses)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_URL = "LMD_TEST_POSTGRES_URL"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a server URL (without a database name)."""
    if url := os.environ.get(ENV_URL):
        yield url.rsplit("/", 1)[0]
        return
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.fail(
            "The PostgreSQL tests need a server: install it (apt-get install postgresql) or set "
            f"{ENV_URL}=postgresql+asyncpg://user@host:port/db"
        )
    # Not under pytest's tmp_path: that is private to root, and the server may run as another user.
    folder = Path(tempfile.mkdtemp(prefix="lmd-test-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
