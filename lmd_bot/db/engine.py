"""Opening the database, running the repository's transactions on it, and migrating the schema.

Alembic is configured in code (no ``alembic.ini``): :func:`alembic_config` points it at
``migrations/`` and a URL, so ``lmd-bot`` and the tests migrate the same way, and an operator can
still run ``alembic -x url=... upgrade head`` through ``lmd_bot/db/alembic.ini``.

A transaction is one plain function of a SQLAlchemy :class:`~sqlalchemy.engine.Connection`
(table statements, no ORM session: its identity map and unit of work cost more of the event
loop's time than the statements themselves), run whole:

- On SQLite, on the event loop itself (see :class:`SqliteDatabase`): the loop is the single
  writer, so our writers never wait on each other. Through an async driver every statement,
  fetch and commit crossed to the driver's thread and back on its own, each crossing waiting for
  a busy event loop and the GIL: tens of milliseconds per write under load, the database's lock
  held all along.
- On PostgreSQL, on the async driver through ``run_sync``; writes in this process take turns,
  as they do on SQLite (the user's job cap is counted inside the write).

Start-up is where a database that cannot be used shows: a URL for an engine we do not support, a
SQLite file that is not a database or is damaged, one that cannot be written, a PostgreSQL server
that does not answer. Each becomes a :class:`~lmd_bot.errors.ConfigError` naming ``db.url`` and
the file or server (never the password), instead of a driver's traceback then or on a user's
first action later.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SETTING = "db.url (LMD_DB__URL)"
SUPPORTED = "sqlite+aiosqlite:///path/to/file or postgresql+asyncpg://user@host/db"
# Seconds to wait for a PostgreSQL server (asyncpg's own default is a minute).
CONNECT_TIMEOUT_S = 15
# SQLite's result codes for "another connection holds the lock" (the extended codes share them).
SQLITE_BUSY, SQLITE_LOCKED = 5, 6


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


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _check_writable(connection: Connection) -> None:
    connection.execute(text("UPDATE alembic_version SET version_num = version_num"))


class Database(ABC):
    """Where the repository's transactions run. ``writes`` and ``reads`` count them (the bot
    benchmark reports them per instruction); ``waits``, those that found SQLite locked by
    another process and waited for it in a thread."""

    where: str  # for messages: the SQLite file or the server, no password
    engine: Engine  # the synchronous face, for event listeners (tools, tests)

    def __init__(self) -> None:
        self.writes = 0
        self.reads = 0
        self.waits = 0

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, committed if it returns, rolled back if it raises."""
        self.writes += 1
        return await self._write(work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection whose transaction is rolled back (it only reads)."""
        self.reads += 1
        return await self._read(work)

    @abstractmethod
    async def _write(self, work: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    async def _read(self, work: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    async def run(self, work: Callable[[Connection], T], *, commit: bool = True) -> T:
        """Run ``work`` on a plain connection in one transaction (migrations, tools, tests);
        ``commit=False`` rolls it back."""

    @abstractmethod
    async def close(self) -> None: ...

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent) and check the database takes
        writes; a database that cannot be used raises ConfigError naming ``db.url``."""
        try:
            await self.run(_upgrade)
            # A database that opens but takes no writes (a read-only file or mount, a standby
            # server) would otherwise fail every user's first action. The write is rolled back.
            await self.run(_check_writable, commit=False)
        except CommandError as exc:  # e.g. a revision this version does not know
            raise ConfigError(
                f"{SETTING}: {self.where} has a schema this lmd-bot cannot migrate ({exc}); "
                "was it made by a newer version?"
            ) from None
        except (SQLAlchemyError, OSError) as exc:
            log.debug("database start-up failed", exc_info=True)
            raise ConfigError(f"{SETTING}: cannot use {self.where}: {_reason(exc)}.") from None


# PostgreSQL's SQLSTATE classes and codes for "not now" (a later try may work): a lost
# connection, out of connections, memory or disk, the server shutting down or starting up, a
# standby that takes no writes (a failover under way), a transaction that lost a race.
_UNAVAILABLE_CLASSES = ("08", "53", "57")
_UNAVAILABLE_CODES = ("25006", "40001", "40P01")


def unavailable(exc: DBAPIError | OSError) -> bool:
    """Whether the database failed for a while rather than for a bug in a statement."""
    if isinstance(exc, OSError | OperationalError | InterfaceError) or exc.connection_invalidated:
        return True  # OSError: no server at all (refused, reset, unreachable)
    code = getattr(exc.orig, "sqlstate", None) or ""
    return code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES


def _busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked": another connection holds the lock we need."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


class SqliteDatabase(Database):
    """SQLite through the standard ``sqlite3`` module, each transaction run whole on the event loop
    (the single writer) and, only while another process holds the lock, in a thread that waits.

    ``now`` never waits for a lock (busy_timeout 0): a transaction of a few statements on a WAL
    database takes well under a millisecond in SQLite itself (the ORM's Python work around it ran
    on the event loop with the async driver too), and nothing in this process can interleave with
    it. If another process (an operator's tool, a backup) holds the lock, the transaction, rolled
    back, runs again in ``waiting``'s thread, which waits up to ``db.busy_timeout_s``: the event
    loop never does.
    """

    def __init__(self, now: Engine, waiting: Engine, *, where: str) -> None:
        super().__init__()
        self.engine = now
        self.where = where
        self._waiting_engine = waiting
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lmd-db")

    @staticmethod
    def _write_with(engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.begin() as connection:
            return work(connection)

    @staticmethod
    def _read_with(engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.connect() as connection:
            return work(connection)

    async def _first_now(self, run: Callable[..., T], work: Callable[[Connection], T]) -> T:
        try:
            return run(self.engine, work)
        except OperationalError as exc:
            if not _busy(exc):
                raise
        self.waits += 1
        log.info("%s is locked by another process: waiting in a thread", self.where)
        return await asyncio.get_running_loop().run_in_executor(self._thread, run, self._waiting_engine, work)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        return await self._first_now(self._write_with, work)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        return await self._first_now(self._read_with, work)

    async def run(self, work: Callable[[Connection], T], *, commit: bool = True) -> T:
        def now() -> T:
            with self._waiting_engine.connect() as connection:
                result = work(connection)
                if commit:
                    connection.commit()
                else:
                    connection.rollback()
                return result

        return await asyncio.get_running_loop().run_in_executor(self._thread, now)

    async def close(self) -> None:
        def stop() -> None:
            self._thread.shutdown(wait=True)
            self._waiting_engine.dispose()
            self.engine.dispose()

        await asyncio.to_thread(stop)


class ServerDatabase(Database):
    """PostgreSQL through its async driver."""

    def __init__(self, engine: AsyncEngine, *, where: str) -> None:
        super().__init__()
        self.async_engine = engine
        self.engine = engine.sync_engine
        self.where = where
        self._write_lock = asyncio.Lock()

    async def _write(self, work: Callable[[Connection], T]) -> T:
        async with self._write_lock, self.async_engine.begin() as connection:
            return await connection.run_sync(work)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        async with self.async_engine.connect() as connection:
            return await connection.run_sync(work)

    async def run(self, work: Callable[[Connection], T], *, commit: bool = True) -> T:
        async with self.async_engine.connect() as connection:
            result = await connection.run_sync(work)
            if commit:
                await connection.commit()
            else:
                await connection.rollback()
            return result

    async def close(self) -> None:
        await self.async_engine.dispose()


def open_database(url: str, *, busy_timeout_s: float = 5.0) -> Database:
    """The database at ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``).

    Creates the SQLite file's folder. Raises ConfigError for a URL of another engine or driver,
    a folder that cannot be made, or a missing driver package.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it: keep it out
        raise ConfigError(f"{SETTING} is not a database URL ({type(exc).__name__})") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "aiosqlite":
            raise ConfigError(f"{SETTING}: use the async SQLite driver, sqlite+aiosqlite:///path/to/file")
        where = "an in-memory SQLite database"
        in_memory = not parsed.database or parsed.database == ":memory:"
        if not in_memory:
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
        # The URL names the async driver (what the setting has always said); transactions run on the
        # standard module (see SqliteDatabase). An in-memory database is one shared connection.
        sync_url = parsed.set(drivername="sqlite")
        shared = {"poolclass": StaticPool} if in_memory else {}
        now = create_engine(sync_url, connect_args={"check_same_thread": False}, **shared)
        event.listen(now, "connect", _sqlite_pragmas(0.0))
        waiting = now
        if not in_memory:  # (in memory, no other process can hold the lock)
            waiting = create_engine(sync_url, connect_args={"check_same_thread": False})
            event.listen(waiting, "connect", _sqlite_pragmas(busy_timeout_s))
        log.info("database: %s", parsed.render_as_string(hide_password=True))
        return SqliteDatabase(now, waiting, where=where)
    if backend != "postgresql":
        raise ConfigError(f"{SETTING}: {backend}+{driver} is not supported; use {SUPPORTED}")
    if driver != "asyncpg":
        raise ConfigError(f"{SETTING}: use the async PostgreSQL driver, postgresql+asyncpg://user@host/db")
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    try:
        async_engine = create_async_engine(
            url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT_S}
        )
    except ImportError as exc:
        raise ConfigError(
            f"{SETTING}: the {driver} driver is not installed ({exc.name}); pip install 'lmd-bot[scale]'"
        ) from None
    log.info("database: %s", parsed.render_as_string(hide_password=True))
    return ServerDatabase(async_engine, where=f"the PostgreSQL database {parsed.database or ''} at {server}")
