"""Where entries live: the protocol, an in-memory store (tests, bench) and the embedded SQLite store.

The Redis store (several gateway instances sharing one cache) is in ``redis_store``. Every store answers
``get`` with None for a missing or expired entry and raises on any failure of its own; the policy turns a
failure into a miss.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # entry_key(): what a lookup asks for
    cache_id: str  # the id of the request that stored it (cache_debug.cache_id; DELETE /api/cache/clear/{id})
    partition: str  # the cache key it was stored under (DELETE /api/cache/clear-by-key/{cacheKey})
    payload: bytes  # codec.encode()
    expires_at: float  # time.time() seconds


class CacheStore(Protocol):
    name: str  # "embedded", "redis", "memory": for logs

    async def start(self) -> None: ...

    async def get(self, key: str) -> Entry | None: ...

    async def put(self, entry: Entry) -> None: ...

    async def delete_id(self, cache_id: str) -> int: ...

    async def delete_partition(self, partition: str) -> int: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """A bounded LRU dict in this process: the reference behaviour, and the bench's in-memory baseline."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._max = max_entries

    async def start(self) -> None:
        pass

    async def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= time.time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, entry: Entry) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete_id(self, cache_id: str) -> int:
        keys = [k for k, e in self._entries.items() if e.cache_id == cache_id]
        for key in keys:
            del self._entries[key]
        return len(keys)

    async def delete_partition(self, partition: str) -> int:
        keys = [k for k, e in self._entries.items() if e.partition == partition]
        for key in keys:
            del self._entries[key]
        return len(keys)

    async def aclose(self) -> None:
        self._entries.clear()


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key        TEXT PRIMARY KEY,
    cache_id   TEXT NOT NULL,
    partition  TEXT NOT NULL,
    payload    BLOB NOT NULL,
    size       INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_entries_id ON cache_entries (cache_id);
CREATE INDEX IF NOT EXISTS cache_entries_partition ON cache_entries (partition);
CREATE INDEX IF NOT EXISTS cache_entries_used ON cache_entries (used_at);
CREATE INDEX IF NOT EXISTS cache_entries_expiry ON cache_entries (expires_at);
CREATE TABLE IF NOT EXISTS cache_size (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER NOT NULL);
INSERT OR IGNORE INTO cache_size VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS cache_entries_added AFTER INSERT ON cache_entries
    BEGIN UPDATE cache_size SET total = total + NEW.size WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS cache_entries_removed AFTER DELETE ON cache_entries
    BEGIN UPDATE cache_size SET total = total - OLD.size WHERE id = 1; END;
"""
ROW_OVERHEAD = 256  # bytes counted per entry beyond its payload (key, ids, index rows)
TOUCH_EVERY = 1.0  # seconds between writes of the hits' LRU stamps (batched: a write per hit cost ~0.3 ms CPU)


def default_path() -> Path:
    """A per-user file in the temp directory, shared by every worker process of this user on the host."""
    return Path(tempfile.gettempdir()) / f"bifrost-stt-{os.getuid()}" / "cache.sqlite3"


class SQLiteStore:
    """The embedded store: one SQLite file in WAL mode, shared by every worker process on the host, bounded
    to ``max_bytes`` by evicting the least recently used entries.

    Lookups run on the event loop's thread on a connection used only for reading: a primary-key read in WAL
    mode takes about 10 µs and never waits for a writer, so it is cheaper than a hop to a thread (a hit must
    cost well under a millisecond). Writes (store, evict, deletes) run on one private thread with its own
    connection, so the loop never waits on the disk or on another process's write lock. A hit's LRU stamp
    is kept in memory and written with the others at most once a second (or with the next store), not
    waited for. The running total size is kept by triggers in the same transactions, so every process sees
    the same total.
    """

    name = "embedded"

    def __init__(self, path: str | os.PathLike[str] | None, max_bytes: int, *, busy_timeout_ms: int = 2000) -> None:
        self.path = Path(path) if path else default_path()
        self.max_bytes = max_bytes
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None  # made in start(): a gateway may be started again
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._touched: dict[str, float] = {}  # entry key -> when it was last hit, not yet written
        self._touch_due = 0.0

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise sqlite3.ProgrammingError("the cache store is not open")
        return self._executor

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread(), fn, *args)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bifrost-stt-cache")
        await self._call(self._open_writer)
        # used for reads only, on the loop's thread; a short timeout: a lookup would rather miss than wait
        self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.05)

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))  # transcripts: readable by this user only
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # a cache: losing the last writes to a power cut is fine
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"cache store schema {version} is newer than this gateway's")
            if version < _SCHEMA_VERSION:  # idempotent: two processes may both get here
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")
        except BaseException:
            db.close()
            raise
        self._writer = db

    def _db(self) -> sqlite3.Connection:
        if self._writer is None:
            raise sqlite3.ProgrammingError("the cache store is not open")
        return self._writer

    async def get(self, key: str) -> Entry | None:
        reader = self._reader
        if reader is None:
            raise sqlite3.ProgrammingError("the cache store is not open")
        row = reader.execute(
            "SELECT cache_id, partition, payload, expires_at FROM cache_entries WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        if row[3] <= now:
            return None  # removed by the next store's sweep
        self._touched[key] = now
        if now >= self._touch_due:
            self._touch_due = now + TOUCH_EVERY
            stamps, self._touched = self._touched, {}
            self._thread().submit(self._touch, stamps)  # not waited for
        return Entry(key, row[0], row[1], bytes(row[2]), row[3])

    def _touch(self, stamps: dict[str, float]) -> None:
        try:
            self._db().executemany("UPDATE cache_entries SET used_at = ? WHERE key = ?",
                                   [(when, key) for key, when in stamps.items()])
        except sqlite3.Error:
            pass  # only the eviction order suffers

    async def put(self, entry: Entry) -> None:
        stamps, self._touched = self._touched, {}
        await self._call(self._put, entry, stamps)

    def _put(self, entry: Entry, stamps: dict[str, float]) -> None:
        db = self._db()
        now = time.time()
        size = len(entry.payload) + ROW_OVERHEAD
        db.execute("BEGIN IMMEDIATE")
        try:
            if stamps:  # the hits since the last write, before choosing what to evict
                db.executemany("UPDATE cache_entries SET used_at = ? WHERE key = ?",
                               [(when, key) for key, when in stamps.items()])
            db.execute("DELETE FROM cache_entries WHERE key = ?", (entry.key,))
            db.execute(
                "DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries WHERE expires_at <= ? LIMIT 256)",
                (now,),
            )
            if size <= self.max_bytes:
                db.execute(
                    "INSERT INTO cache_entries (key, cache_id, partition, payload, size, expires_at, used_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (entry.key, entry.cache_id, entry.partition, entry.payload, size, entry.expires_at, now),
                )
            excess = db.execute("SELECT total FROM cache_size WHERE id = 1").fetchone()[0] - self.max_bytes
            if excess > 0:  # least recently used first, just enough of them
                doomed: list[tuple[str]] = []
                for key, size in db.execute("SELECT key, size FROM cache_entries ORDER BY used_at"):
                    doomed.append((key,))
                    excess -= size
                    if excess <= 0:
                        break
                db.executemany("DELETE FROM cache_entries WHERE key = ?", doomed)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def delete_id(self, cache_id: str) -> int:
        return await self._call(self._delete, "cache_id", cache_id)

    async def delete_partition(self, partition: str) -> int:
        return await self._call(self._delete, "partition", partition)

    def _delete(self, column: str, value: str) -> int:
        """Remove every entry matching; count those that had not expired yet (what a client could still hit)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            (live,) = db.execute(  # column is one of ours, never the client's
                f"SELECT COUNT(*) FROM cache_entries WHERE {column} = ? AND expires_at > ?", (value, time.time())
            ).fetchone()
            db.execute(f"DELETE FROM cache_entries WHERE {column} = ?", (value,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(live)

    def total_bytes(self) -> int:
        """The counted size of every entry (tests)."""
        reader = self._reader
        assert reader is not None
        return int(reader.execute("SELECT total FROM cache_size WHERE id = 1").fetchone()[0])

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            await self._call(self._writer.close)
            self._writer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
