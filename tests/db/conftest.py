from __future__ import annotations

import itertools

import asyncpg
import pytest

from tests.db.postgres import postgres_server

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_root():
    with postgres_server() as url:
        yield url


@pytest.fixture
async def postgres_url(postgres_root):
    """A fresh, empty database on the test server for one test."""
    name = f"lmd_test_{next(_names)}"
    plain = postgres_root.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(f"{plain}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{postgres_root}/{name}"


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path}/test.sqlite3"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request):
    """Every repository test runs on both engines the bot supports."""
    return request.getfixturevalue(f"{request.param}_url")
