"""The SQLite ``JobStore``: one file shared by every worker process on the host (see bifrost_stt.gateway.jobs.runner)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bifrost_stt.gateway.jobs.record import FAILED, PENDING, PROCESSING, Job, JobStoreFull

T = TypeVar("T")


_SCHEMA_VERSION = 2  # 2: pieces_done / pieces_total (long audio's progress)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS transcription_jobs (
    id           TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    result_ttl   INTEGER NOT NULL,
    lease_until  REAL,
    completed_at REAL,
    expires_at   REAL,
    status_code  INTEGER,
    body         BLOB,
    pieces_done  INTEGER,
    pieces_total INTEGER
);
CREATE INDEX IF NOT EXISTS transcription_jobs_unfinished ON transcription_jobs (status, lease_until);
CREATE INDEX IF NOT EXISTS transcription_jobs_expiry ON transcription_jobs (expires_at);
"""
_TO_2 = (  # a version-1 file gains the progress columns
    "ALTER TABLE transcription_jobs ADD COLUMN pieces_done INTEGER",
    "ALTER TABLE transcription_jobs ADD COLUMN pieces_total INTEGER",
)
_COLUMNS = "id, status, created_at, result_ttl, lease_until, completed_at, expires_at, status_code, body"
_UNFINISHED = f"status IN ('{PENDING}', '{PROCESSING}')"


class SQLiteJobStore:
    """A ``JobStore`` in one SQLite file in WAL mode: readers never block the writer, and every process on
    the host opening the same path sees the same jobs.

    stdlib ``sqlite3`` rather than SQLAlchemy: one table and eight statements need no ORM or extra
    dependency. All calls run on one private thread holding the connection, so the event loop never waits
    on the disk or on another process's write lock (``busy_timeout`` bounds that wait). The file is created
    0600 (its WAL and shm files inherit that): results are transcripts.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bifrost-stt-jobs")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- on the store's thread ---------------------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of the process
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"job store schema {version} is newer than this gateway's")
            if version < _SCHEMA_VERSION:  # two processes may both get here: the second finds it done
                with _transaction(db):
                    (version,) = db.execute("PRAGMA user_version").fetchone()
                    if version < _SCHEMA_VERSION:
                        for statement in (*(_TO_2 if version == 1 else ()), *_SCHEMA.split(";")):
                            if statement.strip():
                                db.execute(statement)
                        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db = db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the job store is not open")
        return self._db

    def _create(self, job: Job, max_unfinished: int, now: float) -> None:
        db = self._conn()
        with _transaction(db):
            (unfinished,) = db.execute(
                f"SELECT COUNT(*) FROM transcription_jobs WHERE {_UNFINISHED} AND lease_until > ?", (now,)
            ).fetchone()
            if unfinished >= max_unfinished:
                raise JobStoreFull(unfinished)
            db.execute(
                f"INSERT INTO transcription_jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.status, job.created_at, job.result_ttl, job.lease_until, job.completed_at,
                 job.expires_at, job.status_code, job.body),
            )

    def _get(self, job_id: str, now: float) -> Job | None:
        row = self._conn().execute(
            f"SELECT {_COLUMNS}, pieces_done, pieces_total FROM transcription_jobs "
            "WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (job_id, now),
        ).fetchone()
        if row is None:
            return None
        job_id, status, created, ttl, lease, completed, expires, status_code, body, done, total = row
        return Job(job_id, status, created, ttl, lease, completed, expires, status_code,
                   None if body is None else bytes(body), None if total is None else (done or 0, total))

    def _progress(self, job_id: str, done: int, total: int) -> None:
        self._conn().execute(
            f"UPDATE transcription_jobs SET pieces_done = ?, pieces_total = ? WHERE id = ? AND {_UNFINISHED}",
            (done, total, job_id),
        )

    def _start(self, job_id: str, lease_until: float) -> bool:
        cursor = self._conn().execute(
            "UPDATE transcription_jobs SET status = ?, lease_until = ? WHERE id = ? AND status = ?",
            (PROCESSING, lease_until, job_id, PENDING),
        )
        return cursor.rowcount == 1

    def _finish(self, job_id: str, status: str, status_code: int, body: bytes, now: float) -> bool:
        cursor = self._conn().execute(
            "UPDATE transcription_jobs SET status = ?, status_code = ?, body = ?, completed_at = ?, "
            f"expires_at = ? + result_ttl, lease_until = NULL WHERE id = ? AND {_UNFINISHED}",
            (status, status_code, body, now, now, job_id),
        )
        return cursor.rowcount == 1

    def _renew(self, job_ids: list[str], lease_until: float) -> None:
        db = self._conn()
        with _transaction(db):
            db.executemany(
                f"UPDATE transcription_jobs SET lease_until = ? WHERE id = ? AND {_UNFINISHED}",
                [(lease_until, job_id) for job_id in job_ids],
            )

    def _fail_stale(self, now: float, status_code: int, body: bytes, job_id: str | None) -> int:
        only = "" if job_id is None else " AND id = ?"
        cursor = self._conn().execute(
            "UPDATE transcription_jobs SET status = ?, status_code = ?, body = ?, completed_at = ?, "
            f"expires_at = ? + result_ttl, lease_until = NULL WHERE {_UNFINISHED} AND lease_until <= ?{only}",
            (FAILED, status_code, body, now, now, now, *(() if job_id is None else (job_id,))),
        )
        return cursor.rowcount

    def _purge_expired(self, now: float) -> int:
        return self._conn().execute("DELETE FROM transcription_jobs WHERE expires_at <= ?", (now,)).rowcount

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # -- JobStore --------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(self._open)

    async def create(self, job: Job, *, max_unfinished: int, now: float) -> None:
        await self._call(self._create, job, max_unfinished, now)

    async def get(self, job_id: str, *, now: float) -> Job | None:
        return await self._call(self._get, job_id, now)

    async def start(self, job_id: str, *, lease_until: float) -> bool:
        return await self._call(self._start, job_id, lease_until)

    async def finish(self, job_id: str, *, status: str, status_code: int, body: bytes, now: float) -> bool:
        return await self._call(self._finish, job_id, status, status_code, body, now)

    async def progress(self, job_id: str, *, done: int, total: int) -> None:
        await self._call(self._progress, job_id, done, total)

    async def renew(self, job_ids: Collection[str], *, lease_until: float) -> None:
        if job_ids:
            await self._call(self._renew, list(job_ids), lease_until)

    async def fail_stale(self, *, now: float, status_code: int, body: bytes, job_id: str | None = None) -> int:
        return await self._call(self._fail_stale, now, status_code, body, job_id)

    async def purge_expired(self, *, now: float) -> int:
        return await self._call(self._purge_expired, now)

    async def aclose(self) -> None:
        try:
            await self._call(self._close)
        finally:
            self._executor.shutdown(wait=False)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE: take the write lock first, so a count-then-insert cannot race another process."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def default_store_path() -> Path:
    """``<tmp>/bifrost-stt-<uid>/jobs.sqlite3``: per user, shared by that user's workers, gone with a reboot
    (results live an hour by default; a crash fails the unfinished jobs anyway). The directory must be ours
    and private: in a shared /tmp another user could have planted it."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(tempfile.gettempdir()) / f"bifrost-stt-{uid}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise PermissionError(f"{directory} is not a directory owned by this user; set client.job_store_path")
    if info.st_mode & 0o077:
        directory.chmod(0o700)
    return directory / "jobs.sqlite3"
