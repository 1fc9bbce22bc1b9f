"""The one place a database engine is made: SQLite (aiosqlite) or PostgreSQL (psycopg 3), async.

Every store (request logs here; governance's tables too) takes its engine from ``make_engine`` and its
schema from its own ``MetaData``, created and brought up to date at start by ``migrate``: missing tables
are created and columns added since a table was created are added (additive changes only; a column is
never dropped or retyped in place). Credentials live only inside the URL object, whose ``repr`` hides the
password; nothing here logs a URL with its password.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import URL, MetaData, event, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from bifrost_stt.kernel.settings import LogsStoreConfig

log = logging.getLogger("bifrost_stt.stores")

SQLITE_BUSY_MS = 5000  # several workers write one SQLite file: wait for the lock rather than fail


def state_dir() -> Path:
    """Where a store with no configured path lives: ``$XDG_DATA_HOME/bifrost-stt`` (``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    directory = Path(base) / "bifrost-stt"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def url_for(store: LogsStoreConfig) -> URL:
    """``logs_store`` → a SQLAlchemy URL with an async driver."""
    if store.type == "postgres":
        query = {"sslmode": store.ssl_mode} if store.ssl_mode else {}
        return URL.create(
            "postgresql+psycopg", username=store.user or None, password=store.password.reveal() or None,
            host=store.host, port=store.port, database=store.db_name, query=query,
        )
    path = Path(store.path) if store.path else state_dir() / "logs.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite+aiosqlite", database=str(path))


def make_engine(url: URL | str) -> AsyncEngine:
    """An async engine; SQLite files get WAL and a busy timeout so several workers can share them."""
    engine = create_async_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def describe(url: URL | str) -> str:
    """The URL for a log line: never its password."""
    return url.render_as_string(hide_password=True) if isinstance(url, URL) else "<database>"


async def migrate(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables and add missing columns. Two workers racing on a fresh database: the loser
    retries once and finds the work done."""
    for attempt in (1, 2):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: _migrate(sync, metadata))
            return
        except DBAPIError:
            if attempt == 2:
                raise
            log.debug("schema creation raced another worker; retrying", exc_info=True)


def _migrate(conn: Any, metadata: MetaData) -> None:
    metadata.create_all(conn, checkfirst=True)
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                log.info("adding column %s.%s", table.name, column.name)
                preparer = conn.dialect.identifier_preparer
                definition = CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {definition}"))
