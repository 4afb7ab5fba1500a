"""What an operator's terminal shows at start: lmd-bot's processes log through
:func:`lmd_bot.logs.configure_logging`, with the real libraries under it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A fresh process, as the CLI, the bot and the GPU worker are: logging is configured once, then the
# database is migrated (alembic) and a download is retried (huggingface_hub, against a closed port).
SCRIPT = """
import asyncio, sys
from lmd_bot.logs import configure_logging

configure_logging(sys.argv[2])
from lmd_bot.db import open_database  # alembic names its plugins when it is imported

async def migrate():
    db = open_database(f"sqlite+aiosqlite:///{sys.argv[1]}")
    await db.migrate()
    await db.close()

asyncio.run(migrate())
from huggingface_hub.utils import http_backoff
try:
    http_backoff("GET", "http://127.0.0.1:9/", max_retries=1, base_wait_time=0.01, max_wait_time=0.01)
except Exception as exc:
    print("gave up:", type(exc).__name__, file=sys.stderr)
"""


def _start(tmp_path: Path, level: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "bot.sqlite3"), level],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},  # (the suite's offline mode refuses any request)
    )  # fmt: skip
    return done.stderr.splitlines()


def test_start_up_logs_the_migrations_and_each_retry_once_without_library_chatter(tmp_path):
    lines = _start(tmp_path, "INFO")
    # alembic's bookkeeping (seven "setup plugin" lines, its dialect and DDL mode) is gone ...
    assert not [line for line in lines if "setup plugin" in line or "Context impl" in line], lines
    # ... what it did is not.
    assert any("alembic.runtime.migration: Running upgrade  -> 0001" in line for line in lines), lines
    # huggingface_hub's own stderr handler printed every retry a second time, without a time.
    retries = [line for line in lines if "Retrying in" in line]
    assert len(retries) == 1 and "WARNING huggingface_hub" in retries[0], lines


def test_debug_logging_keeps_the_library_chatter(tmp_path):
    lines = _start(tmp_path, "DEBUG")
    assert any("setup plugin" in line for line in lines), lines
