"""The job store keeps a running job's progress (long audio's pieces), and upgrades a version-1 file to hold it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bifrost_stt.gateway.jobs.record import COMPLETED, PENDING, Job
from bifrost_stt.gateway.jobs.store import SQLiteJobStore

V1 = """
CREATE TABLE transcription_jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL NOT NULL,
    result_ttl INTEGER NOT NULL, lease_until REAL, completed_at REAL, expires_at REAL, status_code INTEGER, body BLOB);
INSERT INTO transcription_jobs VALUES ('old', 'pending', 1.0, 60, 9e9, NULL, NULL, NULL, NULL);
PRAGMA user_version = 1;
"""


async def test_progress_is_kept_while_the_job_runs_and_frozen_once_it_ends(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    try:
        await store.create(Job("j", PENDING, 1.0, 60, lease_until=9e9), max_unfinished=10, now=2.0)
        assert (await store.get("j", now=2.0)).progress is None  # type: ignore[union-attr]
        await store.progress("j", done=2, total=5)
        job = await store.get("j", now=2.0)
        assert job is not None and job.progress == (2, 5)
        assert job.response()["progress"] == {"pieces_done": 2, "pieces_total": 5}
        await store.finish("j", status=COMPLETED, status_code=200, body=b"{}", now=3.0)
        await store.progress("j", done=3, total=5)  # a late write after the end changes nothing
        job = await store.get("j", now=3.0)
        assert job is not None and job.progress == (2, 5)
    finally:
        await store.aclose()


async def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1)
    store = SQLiteJobStore(path)
    await store.open()
    try:
        await store.progress("old", done=1, total=3)
        job = await store.get("old", now=2.0)
        assert job is not None and job.status == PENDING and job.progress == (1, 3)
    finally:
        await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
