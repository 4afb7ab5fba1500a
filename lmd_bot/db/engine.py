"""The async engine, its session factory, and migrating the schema to the newest version.

Alembic is configured in code (no ``alembic.ini``): :func:`alembic_config` points it at
``migrations/`` and a URL, so ``lmd-bot`` and the tests migrate the same way, and an operator can
still run ``alembic -x url=... upgrade head`` through ``lmd_bot/db/alembic.ini``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        # ConfigParser interpolation would read "%" in a password as a placeholder.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while a write commits; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""

        def upgrade(connection: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    async def close(self) -> None:
        await self.engine.dispose()


def open_database(url: str) -> Database:
    """An engine for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``).

    Creates the SQLite file's folder. Raises ConfigError for a URL without an async driver.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it: keep it out
        raise ConfigError(f"db.url is not a database URL ({type(exc).__name__})") from None
    driver = parsed.get_driver_name()
    if parsed.get_backend_name() == "sqlite":
        if driver != "aiosqlite":
            raise ConfigError("db.url: use the async SQLite driver, sqlite+aiosqlite:///path/to/file")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql" and driver != "asyncpg":
        raise ConfigError("db.url: use the async PostgreSQL driver, postgresql+asyncpg://user@host/db")
    engine = create_async_engine(url, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    log.info("database: %s", parsed.render_as_string(hide_password=True))
    return Database(engine=engine, sessions=async_sessionmaker(engine, expire_on_commit=False))
