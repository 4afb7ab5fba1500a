"""Start-up with unusable settings, secrets or databases: one line naming the setting, no traceback.

Each case goes through what the operator runs (``bot.py``'s ``main``, or the core that ``bot.py``
and ``lmd-bot chat`` start) and checks the exact words they are told.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest

import bot
from lmd_bot.config import load_settings
from lmd_bot.db import open_database
from lmd_bot.errors import ConfigError
from lmd_bot.services import open_core

SECRET_TAIL = "Zq9SECRETTAIL"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("LMD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env; relative data/ lands here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bot_env(monkeypatch, tmp_path, **extra: str) -> None:
    """What an operator sets for ``python bot.py``: a token, a key, a database, the preview renderer."""
    values = {
        "LMD_DISCORD__TOKEN": "discord-token",
        "LMD_PLANNER__API_KEY": "test-key",
        "LMD_DB__URL": f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3",
        "LMD_STORAGE__IMAGE_DIR": str(tmp_path / "images"),
        "LMD_QUEUE__RENDERER": "preview",
        **extra,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def run_bot(capsys) -> tuple[int, list[str]]:
    code = bot.main([])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith("lmd-bot cannot start")]


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("LMD_PLANNER__API_KEY", "planner.api_key"),
        ("LMD_PLANNER__OPENAI_API_KEY", "planner.openai_api_key"),
        ("LMD_DISCORD__TOKEN", "discord.token"),
    ],
)
@pytest.mark.parametrize("inside", ["\n", "\r\n", " ", "\t", "\x1b", "\u00a0", "\u200b"])
def test_a_secret_with_whitespace_or_control_characters_is_refused_without_showing_it(
    monkeypatch, variable, setting, inside
):
    monkeypatch.setenv(variable, f"sk-ant-api03{inside}{SECRET_TAIL}")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"Invalid setting '{setting}' ({variable}): contains a space, line break")
    assert "\n" not in message and SECRET_TAIL not in message and "sk-ant" not in message


def test_a_pasted_trailing_newline_is_dropped_not_refused(monkeypatch):
    monkeypatch.setenv("LMD_PLANNER__API_KEY", "  sk-ant-api03-abc\n")
    assert load_settings().planner.api_key.get_secret_value() == "sk-ant-api03-abc"


def test_plan_with_a_broken_key_says_so_once_even_with_debug_logging(tmp_path):
    """It used to try to connect, print the key in debug lines and report "connection failed"."""
    import subprocess
    from pathlib import Path

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),  # this checkout's lmd_bot
        "LMD_PLANNER__API_KEY": f"sk-ant-api03\n{SECRET_TAIL}",
        "LMD_PLANNER__BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    out = subprocess.run(
        [sys.executable, "-m", "lmd_bot.cli", "-v", "plan", "a cat"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    told = [line for line in out.stderr.splitlines() if not line.startswith(("20", "Traceback", " "))]
    assert "connect" not in out.stderr.lower()  # no request was made
    assert told[-1:] == [
        "error: Invalid setting 'planner.api_key' (LMD_PLANNER__API_KEY): contains a space, line break, "
        "control or non-ASCII character, which no key has; copy it again (the value is not shown). "
        "Fix it in your config file or the environment (see config/default.toml)."
    ]
    assert SECRET_TAIL not in out.stdout + out.stderr


# --- numbers, URLs, factories -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "told"),
    [
        ("LMD_GUARD__RATE_LIMIT_WINDOW_S", "inf", "Input should be a finite number"),
        ("LMD_GUARD__RATE_LIMIT_WINDOW_S", "nan", "Input should be a finite number"),
        ("LMD_GUARD__RATE_LIMIT_WINDOW_S", "1e300", "Input should be less than or equal to 86400"),
        ("LMD_QUEUE__JOB_TIMEOUT_S", "inf", "Input should be a finite number"),
        ("LMD_PLANNER__DEADLINE_S", "1e12", "Input should be less than or equal to 3600"),
        ("LMD_QUEUE__REDIS_URL", "notredis://x", "must start with redis://, rediss:// or unix://"),
        ("LMD_GUARD__SAFETY_CHECKER", "not a factory", "must look like 'package.module:function'"),
    ],
)
def test_unusable_values_are_refused_at_start_up_naming_the_setting(
    monkeypatch, tmp_path, capsys, variable, value, told
):
    bot_env(monkeypatch, tmp_path, **{variable: value})
    code, lines = run_bot(capsys)
    setting = variable.removeprefix("LMD_").lower().replace("__", ".")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"lmd-bot cannot start: Invalid setting '{setting}' ({variable}): {told}")
    assert lines[0].endswith("Fix it in your config file or the environment (see config/default.toml).")


@pytest.mark.parametrize(
    ("checker", "told"),
    [
        ("lmd_bot.safety:no_such_checker", "module 'lmd_bot.safety' has no 'no_such_checker'"),
        ("no_such_package.checks:make", "there is no module 'no_such_package.checks'"),
    ],
)
def test_a_safety_checker_that_cannot_be_imported_stops_start_up_not_the_first_render(
    monkeypatch, tmp_path, capsys, checker, told
):
    bot_env(monkeypatch, tmp_path, LMD_GUARD__SAFETY_CHECKER=checker)
    code, lines = run_bot(capsys)
    assert code == 2
    assert lines == [
        f"lmd-bot cannot start: guard.safety_checker (LMD_GUARD__SAFETY_CHECKER): {told} (from {checker!r})"
    ]


async def test_a_good_safety_checker_passes_the_start_up_check(tmp_path):
    settings = load_settings(
        db={"url": f"sqlite+aiosqlite:///{tmp_path}/ok.sqlite3"},
        storage={"image_dir": str(tmp_path / "images")},
        planner={"api_key": "test-key"},
        queue={"renderer": "preview"},
        guard={"safety_checker": "tests.jobs.renderers:flagging_checker"},
    )
    core = await open_core(settings)
    await core.close()


# --- databases ----------------------------------------------------------------------------------


async def _migrated(path) -> None:
    db = open_database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    await db.close()


def test_database_file_of_random_bytes(monkeypatch, tmp_path, capsys):
    (tmp_path / "bot.sqlite3").write_bytes(os.urandom(40_000))
    bot_env(monkeypatch, tmp_path)
    assert run_bot(capsys) == (
        2,
        [
            f"lmd-bot cannot start: db.url (LMD_DB__URL): cannot use the SQLite file {tmp_path}/bot.sqlite3: "
            "DatabaseError: file is not a database."
        ],
    )


def test_database_file_cut_short(monkeypatch, tmp_path, capsys):
    path = tmp_path / "bot.sqlite3"
    asyncio.run(_migrated(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    bot_env(monkeypatch, tmp_path)
    assert run_bot(capsys) == (
        2,
        [
            f"lmd-bot cannot start: db.url (LMD_DB__URL): cannot use the SQLite file {path}: "
            "DatabaseError: database disk image is malformed."
        ],
    )


def test_database_that_cannot_be_written(monkeypatch, tmp_path, capsys):
    # Root writes through chmod, so the file is opened read-only through SQLite's URI instead.
    path = tmp_path / "bot.sqlite3"
    asyncio.run(_migrated(path))
    bot_env(monkeypatch, tmp_path, LMD_DB__URL=f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    assert run_bot(capsys) == (
        2,
        [
            f"lmd-bot cannot start: db.url (LMD_DB__URL): cannot use the SQLite file file:{path}: "
            "OperationalError: attempt to write a readonly database."
        ],
    )


def test_database_folder_under_a_regular_file(monkeypatch, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    bot_env(monkeypatch, tmp_path, LMD_DB__URL=f"sqlite+aiosqlite:///{tmp_path}/afile/bot.sqlite3")
    assert run_bot(capsys) == (
        2,
        [
            f"lmd-bot cannot start: db.url (LMD_DB__URL): cannot create the folder {tmp_path}/afile: "
            "a file is in the way."
        ],
    )


def test_postgresql_server_that_does_not_answer(monkeypatch, tmp_path, capsys):
    port = free_port()
    bot_env(monkeypatch, tmp_path, LMD_DB__URL=f"postgresql+asyncpg://lmd:{SECRET_TAIL}@127.0.0.1:{port}/lmd")
    code, lines = run_bot(capsys)
    assert code == 2
    assert lines == [
        f"lmd-bot cannot start: db.url (LMD_DB__URL): cannot use the PostgreSQL database lmd at "
        f"127.0.0.1:{port}: Connect call failed ('127.0.0.1', {port})."
    ]


@pytest.mark.parametrize("url", ["mysql+aiomysql://lmd@db/lmd", "oracle://lmd@db/lmd", "mssql://db/lmd"])
def test_unsupported_database_engine(monkeypatch, tmp_path, capsys, url):
    bot_env(monkeypatch, tmp_path, LMD_DB__URL=url)
    code, lines = run_bot(capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("lmd-bot cannot start: db.url (LMD_DB__URL): ")
    assert lines[0].endswith(
        " is not supported; use sqlite+aiosqlite:///path/to/file or postgresql+asyncpg://user@host/db"
    )


# --- Discord -------------------------------------------------------------------------------------------


def test_discord_unreachable_is_one_line(monkeypatch, tmp_path, capsys):
    import discord.http

    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{free_port()}/api/v10")
    bot_env(monkeypatch, tmp_path, LMD_DISCORD__CONNECT_RETRIES="1")  # one retry after 1 s, then the line
    code, lines = run_bot(capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("lmd-bot cannot start: cannot reach Discord")
