"""Engines and dialect helpers: one async engine per process, built from the settings."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from bridge.settings import DatabaseSettings
from bridge.store.models import Base


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _prepare_sqlite(url: str) -> None:
    """Create the database file's directory and open the file once. Raises OSError, which the
    CLI reports in one line, when either cannot be done: no permission, a read-only file
    system, a file in the way, a directory at the file's path. Opening it here, not first in
    aiosqlite, matters: aiosqlite reports a failed open from its worker thread, which can
    outlive the event loop of a short command and print a stray traceback."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.is_dir():  # else SQLite says only "unable to open database file"
        raise IsADirectoryError(errno.EISDIR, "Is a directory", database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # a file where a directory must be
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", error.filename) from None
    try:
        sqlite3.connect(database).close()
    except sqlite3.Error as error:
        raise OSError(f"{error}: {database}") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """SQLite gets one connection (its writers serialize anyway, and one connection cannot hit
    ``database is locked``). PostgreSQL gets a pool without pre-ping (a round trip on every
    checkout): after a server restart the first use of a dead connection fails, SQLAlchemy
    drops the whole pool, and the work is retried (a worker's next loop, or the platform's
    redelivery of an event that got a 5xx)."""
    url = settings.url.get_secret_value()
    if url.startswith("sqlite"):
        _prepare_sqlite(url)
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        pool_recycle=1800,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def insert(dialect: str, target: type[Base] | Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that knows ``ON CONFLICT`` on both dialects (on a Core table it skips the
    ORM's bulk-insert path)."""
    return postgresql.insert(target) if dialect == "postgresql" else sqlite.insert(target)


def dialect_of(db: AsyncSession) -> str:
    """``postgresql`` or ``sqlite``: which ``ON CONFLICT`` form a statement takes."""
    return db.get_bind().dialect.name
