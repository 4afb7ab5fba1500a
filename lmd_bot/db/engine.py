"""The async engine, its session factory, and migrating the schema to the newest version.

Alembic is configured in code (no ``alembic.ini``): :func:`alembic_config` points it at
``migrations/`` and a URL, so ``lmd-bot`` and the tests migrate the same way, and an operator can
still run ``alembic -x url=... upgrade head`` through ``lmd_bot/db/alembic.ini``.

Start-up is where a database that cannot be used shows: a URL for an engine we do not support, a
SQLite file that is not a database or is damaged, one that cannot be written, a PostgreSQL server
that does not answer. Each becomes a :class:`~lmd_bot.errors.ConfigError` naming ``db.url`` and
the file or server (never the password), instead of a driver's traceback then or on a user's
first action later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SETTING = "db.url (LMD_DB__URL)"
SUPPORTED = "sqlite+aiosqlite:///path/to/file or postgresql+asyncpg://user@host/db"
# Seconds to wait for a PostgreSQL server (asyncpg's own default is a minute).
CONNECT_TIMEOUT_S = 15


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        # ConfigParser interpolation would read "%" in a password as a placeholder.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(busy_timeout_s: float):
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers proceed while a write commits; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        cursor.close()

    return on_connect


def _reason(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's statement and link."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    words = str(exc).split("\n", 1)[0].strip()
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    where: str = "the database"  # for messages: the SQLite file or the server, no password

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent) and check the database takes
        writes; a database that cannot be used raises ConfigError naming ``db.url``."""

        def upgrade(connection: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(upgrade)
            # A database that opens but takes no writes (a read-only file or mount, a standby
            # server) would otherwise fail every user's first action. The write is rolled back.
            async with self.engine.connect() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
                await conn.rollback()
        except CommandError as exc:  # e.g. a revision this version does not know
            raise ConfigError(
                f"{SETTING}: {self.where} has a schema this lmd-bot cannot migrate ({exc}); "
                "was it made by a newer version?"
            ) from None
        except (SQLAlchemyError, OSError) as exc:
            log.debug("database start-up failed", exc_info=True)
            raise ConfigError(f"{SETTING}: cannot use {self.where}: {_reason(exc)}.") from None

    async def close(self) -> None:
        await self.engine.dispose()


def open_database(url: str, *, busy_timeout_s: float = 5.0) -> Database:
    """An engine for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``).

    Creates the SQLite file's folder. Raises ConfigError for a URL of another engine or driver,
    a folder that cannot be made, or a missing driver package.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it: keep it out
        raise ConfigError(f"{SETTING} is not a database URL ({type(exc).__name__})") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    connect_args = {}
    if backend == "sqlite":
        if driver != "aiosqlite":
            raise ConfigError(f"{SETTING}: use the async SQLite driver, sqlite+aiosqlite:///path/to/file")
        where = "an in-memory SQLite database"
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            where = f"the SQLite file {parsed.database}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ConfigError(
                    f"{SETTING}: cannot create the folder {folder}: a file is in the way."
                ) from None
            except OSError as exc:
                raise ConfigError(f"{SETTING}: cannot create the folder {folder}: {_reason(exc)}.") from None
    elif backend == "postgresql":
        if driver != "asyncpg":
            raise ConfigError(
                f"{SETTING}: use the async PostgreSQL driver, postgresql+asyncpg://user@host/db"
            )
        server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        where = f"the PostgreSQL database {parsed.database or ''} at {server}"
        connect_args = {"timeout": CONNECT_TIMEOUT_S}
    else:
        raise ConfigError(f"{SETTING}: {backend}+{driver} is not supported; use {SUPPORTED}")
    try:
        engine = create_async_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except ImportError as exc:
        raise ConfigError(
            f"{SETTING}: the {driver} driver is not installed ({exc.name}); pip install 'lmd-bot[scale]'"
        ) from None
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout_s))
    log.info("database: %s", parsed.render_as_string(hide_password=True))
    return Database(engine=engine, sessions=async_sessionmaker(engine, expire_on_commit=False), where=where)
