"""Async transcription jobs: the runner (the record is ``jobs.record``, the SQLite store ``jobs.store``).

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

``JobStore`` is the seam for another backend (Postgres, Redis): one module implementing its methods, as
``bifrost_stt.gateway.jobs.store`` does for SQLite.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson

from bifrost_stt.gateway.jobs.record import (  # noqa: F401  (the statuses are the room's vocabulary)
    COMPLETED,
    FAILED,
    MAX_JOB_ID_LENGTH,
    PENDING,
    PROCESSING,
    Job,
    JobStore,
    JobStoreFull,
)
from bifrost_stt.gateway.jobs.store import SQLiteJobStore, default_store_path
from bifrost_stt.kernel import counters, progress
from bifrost_stt.kernel.errors import GatewayError, Overloaded, envelope
from bifrost_stt.kernel.settings import ClientConfig, job_result_ttl

log = logging.getLogger("bifrost_stt.jobs")
T = TypeVar("T")

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
            result_ttl = job_result_ttl(ttl, self.default_ttl())
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
            except (sqlite3.Error, OSError) as exc:
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
        if _disk_full(exc):
            counters.count("job_store_full")
        log.warning("async job store error: %s", exc)
        return Overloaded(f"the async job store failed ({exc}); retry later", code="job_store_unavailable")

    async def _run(self, job: Job, work: Work, release: Callable[[], None]) -> None:
        store = self._store
        assert store is not None
        try:
            await store.start(job.id, lease_until=self._clock() + self._lease)
            with progress.reporting(self._reporter(store, job.id)):
                status, status_code, body = COMPLETED, 200, await work()
        except asyncio.CancelledError:
            status, (status_code, body) = FAILED, _failure(_shut_down())
        except GatewayError as err:
            status, (status_code, body) = FAILED, _failure(err)
        except (sqlite3.Error, OSError) as exc:  # the store could not record the start (a full disk ...)
            status, (status_code, body) = FAILED, _failure(self._store_error(exc))
        except Exception:
            log.exception("async job %s failed inside the gateway", job.id)
            status, (status_code, body) = FAILED, _failure(
                GatewayError("the job failed inside the gateway; the details are in its log"))
        finally:
            release()
        try:
            if not await store.finish(job.id, status=status, status_code=status_code, body=body, now=self._clock()):
                log.warning("async job %s finished after it was declared lost; its result is dropped", job.id)
        except (sqlite3.Error, OSError) as exc:
            # A full disk is not a bug: one line, no traceback. The job stays unfinished in the store and is
            # failed as lost once its lease runs out, so no half-written result is ever served.
            counters.count("job_store_full" if _disk_full(exc) else "job_store_errors")
            log.error("async job %s: its result could not be recorded in the job store (%s)", job.id, exc)
        except Exception:
            log.exception("recording the end of async job %s failed", job.id)
        finally:
            self._tasks.pop(job.id, None)

    def _reporter(self, store: JobStore, job_id: str) -> Callable[[int, int], None]:
        """Progress the work reports (kernel.progress) written to the store in order, never awaited by it."""
        writes: list[asyncio.Task[None]] = []

        def report(done: int, total: int) -> None:
            previous = writes[-1] if writes else None

            async def write() -> None:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                try:
                    await store.progress(job_id, done=done, total=total)
                except Exception as exc:  # progress is a courtesy: the job goes on without it
                    log.debug("recording progress of async job %s failed: %s", job_id, exc)

            writes[:] = [asyncio.get_running_loop().create_task(write())]

        return report

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


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC as the OS says it, or as SQLite words it ("database or disk is full")."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in str(exc)


def _failure(err: GatewayError) -> tuple[int, bytes]:
    return err.status, orjson.dumps(envelope(err))


def _lost() -> GatewayError:
    return Overloaded("the gateway process running this job stopped before it finished (crash or restart); "
                      "submit the job again", code="job_lost")


def _shut_down() -> GatewayError:
    return Overloaded("the gateway shut down before this job finished; submit the job again",
                      code="gateway_shutdown")
