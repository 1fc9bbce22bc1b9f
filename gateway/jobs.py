"""Async transcription jobs: the job record, the store the worker processes share, and the runner.

    POST handler ── JobRunner.submit(work) ── store.create (pending) ── task ──┐
                                                                            │  store.start (processing)
                                                                            │  work(): router → rendered JSON
                                                                            └─ store.finish (completed | failed)
    GET handler  ── JobRunner.lookup(id) ── store.get   (any worker process: the store is one SQLite file)

Why a store shared by processes: with ``serve --workers N`` the poll may land on another process than the
POST, so job state cannot live in memory. The work itself (the upload and the upstream call) stays in the
process that accepted the job; only its state and its rendered result travel through the store.

Liveness is a lease: an unfinished job carries ``lease_until``, which its runner renews every
``lease_seconds / 3``. A job whose lease ran out belongs to a process that died (crash, OOM kill, restart):
a sweep (at start-up, then every ``sweep_seconds``) and every poll mark it ``failed`` with a 503 saying so.
A lease, not "fail everything unfinished at start-up", because a restarted worker shares the store with
live ones whose jobs must not be failed under them.

Finished jobs keep their result for ``result_ttl`` seconds after completion (``expires_at``); expired
jobs are invisible at once and deleted by the sweep. The first terminal state written wins: a completion
that arrives after its job was declared lost is dropped, so a poller never sees a result change.

``JobStore`` is the seam for another backend (Postgres, Redis): one module implementing its methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from gateway.errors import GatewayError, Overloaded, envelope
from gateway.settings import ClientConfig

log = logging.getLogger("bifrost_stt.jobs")
T = TypeVar("T")

PENDING, PROCESSING, COMPLETED, FAILED = "pending", "processing", "completed", "failed"
MAX_RESULT_TTL = 30 * 24 * 3600  # a longer TTL is clamped: results are not an archive
MAX_JOB_ID_LENGTH = 128  # ids are uuid4 strings; anything longer cannot exist and is not looked up


def utc(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds, as the contract's ``format: date-time`` asks."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Job:
    """One job as stored. ``body`` is the rendered TranscriptionResponse (completed) or BifrostError (failed)."""

    id: str
    status: str
    created_at: float
    result_ttl: int
    lease_until: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    status_code: int | None = None
    body: bytes | None = None

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETED, FAILED)

    def response(self) -> dict[str, Any]:
        """The contract's AsyncJobResponse; the stored body is embedded as is, never parsed again."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "created_at": utc(self.created_at)}
        if self.completed_at is not None:
            out["completed_at"] = utc(self.completed_at)
        if self.expires_at is not None:
            out["expires_at"] = utc(self.expires_at)
        if self.status_code is not None:
            out["status_code"] = self.status_code
        if self.body is not None:
            out["result" if self.status == COMPLETED else "error"] = orjson.Fragment(self.body)
        return out


class JobStoreFull(Exception):
    """``create`` refused: ``max_unfinished`` jobs are already pending or processing."""

    def __init__(self, unfinished: int) -> None:
        super().__init__(f"{unfinished} unfinished jobs")
        self.unfinished = unfinished


class JobStore(Protocol):
    """Where jobs live. Every method is safe to call from several processes at once."""

    async def open(self) -> None: ...

    async def create(self, job: Job, *, max_unfinished: int, now: float) -> None:
        """Insert ``job`` unless ``max_unfinished`` live unfinished jobs exist (``JobStoreFull``)."""

    async def get(self, job_id: str, *, now: float) -> Job | None:
        """The job, or None when unknown or expired."""

    async def start(self, job_id: str, *, lease_until: float) -> bool:
        """pending → processing; False if the job is no longer pending."""

    async def finish(self, job_id: str, *, status: str, status_code: int, body: bytes, now: float) -> bool:
        """An unfinished job → ``status``, expiring ``result_ttl`` after ``now``; False if already finished."""

    async def renew(self, job_ids: Collection[str], *, lease_until: float) -> None: ...

    async def fail_stale(self, *, now: float, status_code: int, body: bytes, job_id: str | None = None) -> int:
        """Fail unfinished jobs whose lease ran out (only ``job_id`` when given); returns how many."""

    async def purge_expired(self, *, now: float) -> int: ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------------------ SQLite

_SCHEMA_VERSION = 1
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
    body         BLOB
);
CREATE INDEX IF NOT EXISTS transcription_jobs_unfinished ON transcription_jobs (status, lease_until);
CREATE INDEX IF NOT EXISTS transcription_jobs_expiry ON transcription_jobs (expires_at);
"""
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
            if version < _SCHEMA_VERSION:  # idempotent: two processes may both get here
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")
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
            f"SELECT {_COLUMNS} FROM transcription_jobs WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (job_id, now),
        ).fetchone()
        if row is None:
            return None
        job_id, status, created, ttl, lease, completed, expires, status_code, body = row
        return Job(job_id, status, created, ttl, lease, completed, expires, status_code,
                   None if body is None else bytes(body))

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


# ------------------------------------------------------------------------------------------------ runner

Work = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class _Running:
    task: asyncio.Task[None]
    release: Callable[[], None]


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` callable any number of times, run once: the upload is closed exactly once."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return call


class JobRunner:
    """Runs this process's jobs in the background and answers for every process's jobs through the store.

    Concurrency is bounded where every other request's is: ``work`` goes through the router, whose
    per-provider admission queues it. What this bounds is the backlog: at most ``max_pending_jobs``
    unfinished jobs in the store (503 beyond), since each holds its upload until it runs.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        store: JobStore | None = None,
        lease_seconds: float = 30.0,
        sweep_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._lease = lease_seconds
        self._sweep_every = sweep_seconds
        self._clock = clock
        self._tasks: dict[str, _Running] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._unavailable: str | None = "the gateway is starting"
        self._closing = False

    @property
    def store(self) -> JobStore | None:
        return self._store

    def default_ttl(self) -> int:
        return self._config.async_job_result_ttl

    async def start(self) -> None:
        """Open the store, fail the jobs of dead processes, purge expired results, start renewing leases.

        A store that cannot be opened stops the start when its path was configured; with the default
        path it only disables the async routes (503 naming the reason), since most users never call them.
        """
        self._closing = False
        configured = self._config.job_store_path
        try:
            if self._store is None:
                self._store = SQLiteJobStore(configured or default_store_path())
            await self._store.open()
            await self._sweep()
        except (OSError, sqlite3.Error) as exc:
            if configured:
                raise RuntimeError(f"cannot open the async job store {configured}: {exc}") from exc
            self._unavailable = f"the async job store cannot be opened ({exc}); set client.job_store_path"
            log.error("async jobs disabled: %s", self._unavailable)
            return
        self._unavailable = None
        self._maintenance = asyncio.create_task(self._maintain(), name="bifrost-stt job leases")

    async def submit(self, work: Work, *, ttl: int | None = None, release: Callable[[], None]) -> Job:
        """Record a pending job and run ``work`` in the background; ``release`` runs once the job is over
        (or at once if it is refused), to let go of the upload."""
        try:
            store = self._available()
            now = self._clock()
            result_ttl = min(ttl if ttl is not None and ttl > 0 else self.default_ttl(), MAX_RESULT_TTL)
            job = Job(id=str(uuid.uuid4()), status=PENDING, created_at=now, result_ttl=result_ttl,
                      lease_until=now + self._lease)
            limit = self._config.max_pending_jobs
            try:
                await store.create(job, max_unfinished=limit, now=now)
            except JobStoreFull as full:
                raise Overloaded(
                    f"{full.unfinished} async jobs are waiting or running (client.max_pending_jobs is {limit}); "
                    "retry later", code="too_many_jobs", headers={"Retry-After": "5"},
                ) from None
            except sqlite3.Error as exc:
                raise self._store_error(exc) from None
        except BaseException:
            release()
            raise
        release = _once(release)
        task = asyncio.create_task(self._run(job, work, release), name=f"job {job.id}")
        self._tasks[job.id] = _Running(task, release)
        return job

    async def lookup(self, job_id: str) -> Job | None:
        """The job as any process last wrote it; one whose runner died is failed here, not left running."""
        store = self._available()
        if len(job_id) > MAX_JOB_ID_LENGTH:
            return None
        now = self._clock()
        try:
            job = await store.get(job_id, now=now)
            if job is not None and not job.finished and job.lease_until is not None and job.lease_until <= now:
                status, body = _failure(_lost())
                await store.fail_stale(now=now, status_code=status, body=body, job_id=job_id)
                job = await store.get(job_id, now=now)
        except sqlite3.Error as exc:
            raise self._store_error(exc) from None
        return job

    async def aclose(self) -> None:
        """Cancel this process's jobs and record them failed: a shut-down gateway will not finish them."""
        self._closing = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        running = dict(self._tasks)
        for item in running.values():
            item.task.cancel()
        await asyncio.gather(*(item.task for item in running.values()), return_exceptions=True)
        # A task cancelled before its first step never ran its own clean-up: do it here.
        status, body = _failure(_shut_down())
        for job_id, item in list(self._tasks.items()):
            item.release()
            if self._store is not None:
                await self._store.finish(job_id, status=FAILED, status_code=status, body=body, now=self._clock())
        self._tasks.clear()
        store, self._store = self._store, None
        self._unavailable = "the gateway is shutting down"
        if store is not None:
            await store.aclose()

    # -- internals ---------------------------------------------------------------------------------------

    def _available(self) -> JobStore:
        if self._unavailable is not None or self._store is None:
            raise Overloaded(f"async jobs are unavailable: {self._unavailable or 'no job store'}",
                             code="job_store_unavailable")
        return self._store

    def _store_error(self, exc: Exception) -> GatewayError:
        log.warning("async job store error: %s", exc)
        return Overloaded(f"the async job store failed ({exc}); retry later", code="job_store_unavailable")

    async def _run(self, job: Job, work: Work, release: Callable[[], None]) -> None:
        store = self._store
        assert store is not None
        try:
            await store.start(job.id, lease_until=self._clock() + self._lease)
            status, status_code, body = COMPLETED, 200, await work()
        except asyncio.CancelledError:
            status, (status_code, body) = FAILED, _failure(_shut_down())
        except GatewayError as err:
            status, (status_code, body) = FAILED, _failure(err)
        except Exception:
            log.exception("async job %s failed inside the gateway", job.id)
            status, (status_code, body) = FAILED, _failure(
                GatewayError("the job failed inside the gateway; the details are in its log"))
        finally:
            release()
        try:
            if not await store.finish(job.id, status=status, status_code=status_code, body=body, now=self._clock()):
                log.warning("async job %s finished after it was declared lost; its result is dropped", job.id)
        except Exception:
            log.exception("recording the end of async job %s failed", job.id)
        finally:
            self._tasks.pop(job.id, None)

    async def _maintain(self) -> None:
        next_sweep = self._clock() + self._sweep_every
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                assert self._store is not None
                await self._store.renew(list(self._tasks), lease_until=self._clock() + self._lease)
                if self._clock() >= next_sweep:
                    await self._sweep()
                    next_sweep = self._clock() + self._sweep_every
            except Exception as exc:  # the next round retries; a lease outlives two missed renewals
                log.warning("async job maintenance failed: %s", exc)

    async def _sweep(self) -> None:
        assert self._store is not None
        now = self._clock()
        status, body = _failure(_lost())
        lost = await self._store.fail_stale(now=now, status_code=status, body=body)
        purged = await self._store.purge_expired(now=now)
        if lost:
            log.warning("%d async jobs were left unfinished by a stopped gateway process; marked failed", lost)
        if purged:
            log.debug("purged %d expired async jobs", purged)


def _failure(err: GatewayError) -> tuple[int, bytes]:
    return err.status, orjson.dumps(envelope(err))


def _lost() -> GatewayError:
    return Overloaded("the gateway process running this job stopped before it finished (crash or restart); "
                      "submit the job again", code="job_lost")


def _shut_down() -> GatewayError:
    return Overloaded("the gateway shut down before this job finished; submit the job again",
                      code="gateway_shutdown")
