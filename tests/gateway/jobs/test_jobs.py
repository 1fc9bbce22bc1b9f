"""The job store (SQLite, shared by processes) and the runner, without HTTP.

Time is a hand-moved clock, so expiry and leases are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bifrost_stt.kernel.errors import ClientError, Overloaded
from bifrost_stt.gateway.jobs.record import COMPLETED, FAILED, PENDING, PROCESSING, Job, JobStoreFull
from bifrost_stt.gateway.jobs.runner import JobRunner
from bifrost_stt.gateway.jobs.store import SQLiteJobStore
from bifrost_stt.kernel.settings import MAX_RESULT_TTL, ClientConfig

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BODY = b'{"text":"hello","extra_fields":{"provider":"openai"}}'


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await s.open()
    yield s
    await s.aclose()


def pending(job_id: str = "job-1", *, ttl: int = 60, lease_until: float = T0 + 30) -> Job:
    return Job(id=job_id, status=PENDING, created_at=T0, result_ttl=ttl, lease_until=lease_until)


# ------------------------------------------------------------------------------------------------ the store


async def test_create_then_get_returns_the_pending_job(store: SQLiteJobStore) -> None:
    await store.create(pending(), max_unfinished=10, now=T0)
    job = await store.get("job-1", now=T0)
    assert job == pending()
    assert job.response() == {"id": "job-1", "status": "pending", "created_at": "2027-01-15T08:00:00.000Z"}
    assert await store.get("job-2", now=T0) is None


async def test_finish_sets_the_result_and_its_expiry_once(store: SQLiteJobStore) -> None:
    await store.create(pending(ttl=60), max_unfinished=10, now=T0)
    assert await store.start("job-1", lease_until=T0 + 40)
    assert (await store.get("job-1", now=T0)).status == PROCESSING  # type: ignore[union-attr]
    assert await store.finish("job-1", status=COMPLETED, status_code=200, body=BODY, now=T0 + 5)
    # the first terminal state wins: a late failure does not overwrite the result
    assert not await store.finish("job-1", status=FAILED, status_code=500, body=b"{}", now=T0 + 6)
    assert not await store.start("job-1", lease_until=T0 + 50)
    job = await store.get("job-1", now=T0 + 10)
    assert job is not None and job.status == COMPLETED and job.lease_until is None
    assert (job.completed_at, job.expires_at, job.status_code, job.body) == (T0 + 5, T0 + 65, 200, BODY)
    body = orjson.loads(orjson.dumps(job.response()))
    assert body == {
        "id": "job-1", "status": "completed", "status_code": 200, "result": orjson.loads(BODY),
        "created_at": "2027-01-15T08:00:00.000Z", "completed_at": "2027-01-15T08:00:05.000Z",
        "expires_at": "2027-01-15T08:01:05.000Z",
    }


async def test_a_failed_job_carries_its_error_not_a_result(store: SQLiteJobStore) -> None:
    await store.create(pending(), max_unfinished=10, now=T0)
    error = b'{"is_bifrost_error":false,"status_code":400,"error":{"type":"invalid_request_error","message":"x"}}'
    await store.finish("job-1", status=FAILED, status_code=400, body=error, now=T0 + 1)
    body = orjson.loads(orjson.dumps((await store.get("job-1", now=T0 + 1)).response()))  # type: ignore[union-attr]
    assert body["status"] == "failed" and body["status_code"] == 400
    assert body["error"] == orjson.loads(error) and "result" not in body


async def test_expired_jobs_are_invisible_at_once_and_purged_later(store: SQLiteJobStore) -> None:
    await store.create(pending(ttl=60), max_unfinished=10, now=T0)
    await store.finish("job-1", status=COMPLETED, status_code=200, body=BODY, now=T0)
    assert await store.get("job-1", now=T0 + 59.9) is not None
    assert await store.get("job-1", now=T0 + 60) is None
    assert await store.purge_expired(now=T0 + 59) == 0
    assert await store.purge_expired(now=T0 + 61) == 1
    assert await store.purge_expired(now=T0 + 62) == 0


async def test_fail_stale_takes_only_unfinished_jobs_whose_lease_ran_out(store: SQLiteJobStore) -> None:
    await store.create(pending("dead", lease_until=T0 + 10), max_unfinished=10, now=T0)
    await store.create(pending("alive", lease_until=T0 + 100), max_unfinished=10, now=T0)
    await store.create(pending("done", lease_until=T0 + 10), max_unfinished=10, now=T0)
    await store.finish("done", status=COMPLETED, status_code=200, body=BODY, now=T0 + 1)
    assert await store.fail_stale(now=T0 + 20, status_code=503, body=b'{"lost":true}') == 1
    dead = await store.get("dead", now=T0 + 20)
    assert dead is not None and (dead.status, dead.status_code, dead.body) == (FAILED, 503, b'{"lost":true}')
    assert dead.expires_at == T0 + 20 + 60  # a lost job's error is kept as long as a result would be
    assert (await store.get("alive", now=T0 + 20)).status == PENDING  # type: ignore[union-attr]
    assert (await store.get("done", now=T0 + 20)).status == COMPLETED  # type: ignore[union-attr]


async def test_renewed_leases_keep_a_job_alive(store: SQLiteJobStore) -> None:
    await store.create(pending(lease_until=T0 + 10), max_unfinished=10, now=T0)
    await store.renew(["job-1"], lease_until=T0 + 40)
    assert await store.fail_stale(now=T0 + 20, status_code=503, body=b"{}") == 0
    assert await store.fail_stale(now=T0 + 41, status_code=503, body=b"{}", job_id="other") == 0
    assert await store.fail_stale(now=T0 + 41, status_code=503, body=b"{}", job_id="job-1") == 1


async def test_the_backlog_is_bounded_by_live_unfinished_jobs(store: SQLiteJobStore) -> None:
    await store.create(pending("a"), max_unfinished=2, now=T0)
    await store.create(pending("b", lease_until=T0 + 5), max_unfinished=2, now=T0)
    with pytest.raises(JobStoreFull) as full:
        await store.create(pending("c"), max_unfinished=2, now=T0)
    assert full.value.unfinished == 2
    await store.finish("a", status=COMPLETED, status_code=200, body=BODY, now=T0)
    await store.create(pending("c"), max_unfinished=2, now=T0)  # a finished job frees its place
    # a job whose process died does not hold a place either
    await store.create(pending("d"), max_unfinished=2, now=T0 + 6)


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    """What several worker processes do: each opens the same path."""
    path = tmp_path / "shared" / "jobs.sqlite3"
    a, b = SQLiteJobStore(path), SQLiteJobStore(path)
    await a.open()
    await b.open()
    try:
        await a.create(pending(), max_unfinished=10, now=T0)
        assert (await b.get("job-1", now=T0)) == pending()
        assert await b.start("job-1", lease_until=T0 + 30)
        assert (await a.get("job-1", now=T0)).status == PROCESSING  # type: ignore[union-attr]
        await b.finish("job-1", status=COMPLETED, status_code=200, body=BODY, now=T0 + 1)
        assert (await a.get("job-1", now=T0 + 1)).body == BODY  # type: ignore[union-attr]
        with pytest.raises(JobStoreFull):  # the bound is one for both
            await b.create(pending("x"), max_unfinished=1, now=T0)
            await a.create(pending("y"), max_unfinished=1, now=T0)
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_file_is_private_and_reopening_keeps_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SQLiteJobStore(path)
    await first.open()
    await first.create(pending(), max_unfinished=10, now=T0)
    await first.aclose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # results are transcripts
    again = SQLiteJobStore(path)
    await again.open()
    assert await again.get("job-1", now=T0) == pending()
    await again.aclose()


# ------------------------------------------------------------------------------------------------ the runner


def config(tmp_path: Path, **changes: Any) -> ClientConfig:
    return ClientConfig(job_store_path=str(tmp_path / "jobs.sqlite3"), **changes)


async def wait_finished(runner: JobRunner, job_id: str) -> Job:
    for _ in range(200):
        job = await runner.lookup(job_id)
        if job is not None and job.status in (COMPLETED, FAILED):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError("the job did not finish")


async def test_runner_runs_the_work_and_records_its_result(tmp_path: Path) -> None:
    runner, released = JobRunner(config(tmp_path, async_job_result_ttl=120)), []
    await runner.start()

    async def work() -> bytes:
        return BODY

    job = await runner.submit(work, release=lambda: released.append(1))
    assert job.status == PENDING and job.result_ttl == 120
    done = await wait_finished(runner, job.id)
    assert (done.status, done.status_code, done.body) == (COMPLETED, 200, BODY)
    assert done.expires_at == pytest.approx(done.completed_at + 120)  # type: ignore[operator]
    assert released == [1]
    await runner.aclose()


@pytest.mark.parametrize(("asked", "granted"), [(None, 3600), (0, 3600), (-5, 3600), (7, 7), (10**12, MAX_RESULT_TTL)])
async def test_runner_ttl(tmp_path: Path, asked: int | None, granted: int) -> None:
    runner = JobRunner(config(tmp_path))
    await runner.start()

    async def work() -> bytes:
        return BODY

    job = await runner.submit(work, ttl=asked, release=lambda: None)
    assert job.result_ttl == granted
    await wait_finished(runner, job.id)
    await runner.aclose()


async def test_a_gateway_error_fails_the_job_with_its_envelope(tmp_path: Path) -> None:
    runner = JobRunner(config(tmp_path))
    await runner.start()

    async def work() -> bytes:
        raise ClientError("model 'x' is not allowed", param="model", provider="openai", model="x")

    job = await wait_finished(runner, (await runner.submit(work, release=lambda: None)).id)
    assert job.status == FAILED and job.status_code == 400
    error = orjson.loads(job.body or b"")
    assert error["error"] == {"type": "invalid_request_error", "message": "model 'x' is not allowed", "param": "model"}
    assert error["extra_fields"]["provider"] == "openai"
    await runner.aclose()


async def test_a_bug_in_the_work_fails_the_job_without_details(tmp_path: Path) -> None:
    runner = JobRunner(config(tmp_path))
    await runner.start()

    async def work() -> bytes:
        raise KeyError("secret internals")

    job = await wait_finished(runner, (await runner.submit(work, release=lambda: None)).id)
    assert job.status_code == 500 and b"secret internals" not in (job.body or b"")
    await runner.aclose()


async def test_a_full_backlog_is_503_and_releases_the_upload(tmp_path: Path) -> None:
    runner, gate = JobRunner(config(tmp_path, max_pending_jobs=1)), asyncio.Event()
    await runner.start()

    async def work() -> bytes:
        await gate.wait()
        return BODY

    released: list[str] = []
    first = await runner.submit(work, release=lambda: released.append("first"))
    with pytest.raises(Overloaded) as refused:
        await runner.submit(work, release=lambda: released.append("second"))
    assert refused.value.code == "too_many_jobs" and refused.value.headers_for_client() == {"Retry-After": "5"}
    assert released == ["second"]
    gate.set()
    await wait_finished(runner, first.id)
    await runner.aclose()


async def test_shutdown_cancels_running_jobs_and_records_them_failed(tmp_path: Path) -> None:
    runner, started = JobRunner(config(tmp_path)), asyncio.Event()
    await runner.start()
    cancelled: list[bool] = []

    async def work() -> bytes:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return BODY

    released: list[str] = []
    running = await runner.submit(work, release=lambda: released.append("running"))
    await started.wait()
    never_started = await runner.submit(work, release=lambda: released.append("queued"))  # cancelled before it ran
    await runner.aclose()
    assert cancelled == [True] and sorted(released) == ["queued", "running"]

    reader = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await reader.open()
    for job_id in (running.id, never_started.id):
        job = await reader.get(job_id, now=time.time())
        assert job is not None and job.status == FAILED and job.status_code == 503
        assert orjson.loads(job.body or b"")["error"]["code"] == "gateway_shutdown"
    await reader.aclose()


async def test_jobs_of_a_dead_process_are_failed_at_start_up_and_on_lookup(tmp_path: Path) -> None:
    """A process that died left two jobs processing; their leases run out; a new runner reports them lost."""
    clock = Clock()
    dead = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await dead.open()
    await dead.create(pending("swept", lease_until=T0 + 30), max_unfinished=10, now=T0)
    await dead.aclose()

    clock.now = T0 + 31
    runner = JobRunner(config(tmp_path), clock=clock)
    await runner.start()  # the start-up sweep
    swept = await runner.lookup("swept")
    assert swept is not None and swept.status == FAILED and swept.status_code == 503
    assert orjson.loads(swept.body or b"")["error"]["code"] == "job_lost"

    # between sweeps, a poll does the same for the job it asks about
    assert runner.store is not None
    await runner.store.create(pending("polled", lease_until=T0 + 40), max_unfinished=10, now=T0 + 31)
    assert (await runner.lookup("polled")).status == PENDING  # type: ignore[union-attr]
    clock.now = T0 + 41
    polled = await runner.lookup("polled")
    assert polled is not None and polled.status == FAILED
    await runner.aclose()


async def test_a_live_runner_renews_its_leases(tmp_path: Path) -> None:
    runner, gate = JobRunner(config(tmp_path), lease_seconds=0.3), asyncio.Event()
    await runner.start()

    async def work() -> bytes:
        await gate.wait()
        return BODY

    job = await runner.submit(work, release=lambda: None)
    await asyncio.sleep(0.8)  # well past the first lease: renewals kept it alive
    assert (await runner.lookup(job.id)).status == PROCESSING  # type: ignore[union-attr]
    gate.set()
    assert (await wait_finished(runner, job.id)).status == COMPLETED
    await runner.aclose()


async def test_unknown_and_absurd_ids_are_not_found(tmp_path: Path) -> None:
    runner = JobRunner(config(tmp_path))
    await runner.start()
    assert await runner.lookup("no-such-job") is None
    assert await runner.lookup("x" * 10_000) is None
    await runner.aclose()


async def test_an_unopenable_configured_store_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    runner = JobRunner(ClientConfig(job_store_path=str(blocker / "jobs.sqlite3")))
    with pytest.raises(RuntimeError, match="cannot open the async job store"):
        await runner.start()


def test_the_config_file_sets_the_job_fields() -> None:
    from bifrost_stt.gateway.config.load import ConfigError, from_document

    client = {"job_store_path": "/var/lib/bifrost-stt/jobs.sqlite3", "max_pending_jobs": 10, "async_job_result_ttl": 60}
    config = from_document({"client": client}, {}, frozenset())
    assert (config.client.job_store_path, config.client.max_pending_jobs, config.client.async_job_result_ttl) == (
        "/var/lib/bifrost-stt/jobs.sqlite3", 10, 60)
    for bad in ({"max_pending_jobs": 0}, {"job_store_path": ""}, {"async_job_result_ttl": MAX_RESULT_TTL + 1}):
        with pytest.raises(ConfigError):
            from_document({"client": bad}, {}, frozenset())
