"""The request-log store against SQLite and PostgreSQL: the same tests, both backends, real databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, inspect, make_url

from bifrost_stt.gateway.stores.db import make_engine, migrate, url_for
from bifrost_stt.gateway.stores.logs import LogFilter, LogSink, LogStore, logs, row_of
from bifrost_stt.kernel.record import RequestRecord
from bifrost_stt.kernel.settings import ClientConfig, LogsStoreConfig, Secret


@pytest.fixture(scope="module")
def logs_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of this module's own beside the session's (which other tests expect to find empty)."""
    import psycopg

    base = make_url(postgres_url)
    name = f"{base.database}_logs"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}"
    return str(request.getfixturevalue("logs_postgres_url"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[LogStore]:
    engine = make_engine(database_url)
    store = LogStore(engine)
    await store.migrate()
    async with engine.begin() as conn:  # the PostgreSQL database lives for the session: start empty
        await conn.execute(logs.delete())
    yield store
    await engine.dispose()


def record(n: int, **kw: Any) -> RequestRecord:
    rec = RequestRecord(operation="createTranscription", route="/v1/audio/transcriptions")
    rec.timestamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    rec.requested_provider, rec.requested_model = "openai", "whisper-1"
    rec.provider, rec.model = kw.pop("provider", "openai"), kw.pop("model", "whisper-1")
    rec.params = {"response_format": "json", "prompt": "names: Zoë"}
    rec.input_filename, rec.input_bytes = "a.wav", 1000 + n
    rec.output_text = kw.pop("text", f"transcript number {n}")
    rec.audio_seconds = 2.0 + n
    status = kw.pop("status_code", 200)
    for name, value in kw.items():
        setattr(rec, name, value)
    rec.finish(status, None if status < 400 else {"status_code": status, "error": {"message": "no"}})
    rec.latency_ms = 100.0 * (n + 1)
    return rec


async def test_write_then_read_one_entry(store: LogStore) -> None:
    await store.write([row_of(record(1, selected_key_name="main", selected_key_id="main"), content=True)])
    rows = await store.search(LogFilter(), limit=10, offset=0, sort_by="timestamp", order="desc")
    (entry,) = rows["logs"]
    again = await store.get(entry["id"])
    assert again == entry
    assert entry["provider"] == "openai" and entry["model"] == "whisper-1" and entry["status"] == "success"
    assert entry["object"] == "transcription" and entry["latency"] == 200.0
    assert entry["timestamp"] == "2026-01-01T00:01:00Z"
    assert entry["selected_key_name"] == "main"
    assert entry["transcription_input"] == {"filename": "a.wav", "size_bytes": 1001}
    assert entry["transcription_output"] == {"text": "transcript number 1", "usage": {"type": "duration", "seconds": 3.0}}
    assert entry["params"]["prompt"] == "names: Zoë"
    assert await store.get("no-such-id") is None


async def test_content_logging_off_keeps_usage_not_text(store: LogStore) -> None:
    await store.write([row_of(record(1), content=False)])
    (entry,) = (await store.search(LogFilter(), limit=10, offset=0, sort_by="timestamp", order="desc"))["logs"]
    assert entry["transcription_output"] == {"usage": {"type": "duration", "seconds": 3.0}}
    assert "prompt" not in entry["params"] and entry["metadata"]["audio_seconds"] == 3.0
    found = await store.search(LogFilter(content_search="transcript"), limit=10, offset=0, sort_by="timestamp", order="desc")
    assert found["logs"] == []


async def test_filters_paging_sorting_and_stats(store: LogStore) -> None:
    rows = [row_of(record(n, provider="groq" if n % 2 else "openai", cost=0.01 * n if n < 4 else None,
                          status_code=502 if n == 5 else 200), content=True) for n in range(6)]
    await store.write(rows)

    async def ids(where: LogFilter, **kw: Any) -> list[int]:
        args = {"limit": 50, "offset": 0, "sort_by": "timestamp", "order": "asc", **kw}
        found = await store.search(where, **args)
        return [entry["transcription_input"]["size_bytes"] - 1000 for entry in found["logs"]]

    assert await ids(LogFilter()) == [0, 1, 2, 3, 4, 5]
    assert await ids(LogFilter(), order="desc", limit=2, offset=1) == [4, 3]
    assert await ids(LogFilter(providers=("groq",))) == [1, 3, 5]
    assert await ids(LogFilter(status=("error",))) == [5]
    assert await ids(LogFilter(min_latency=250, max_latency=450)) == [2, 3]
    assert await ids(LogFilter(missing_cost_only=True)) == [4, 5]
    assert await ids(LogFilter(min_cost=0.015)) == [2, 3]
    assert await ids(LogFilter(content_search="NUMBER 4")) == [4]  # case-insensitive
    assert await ids(LogFilter(content_search="%")) == []  # a LIKE wildcard is searched for literally
    start = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    assert await ids(LogFilter(start_time=start, end_time=start + timedelta(minutes=1))) == [2, 3]
    assert await ids(LogFilter(), sort_by="latency", order="desc") == [5, 4, 3, 2, 1, 0]
    assert await ids(LogFilter(unmatchable=True)) == []

    page = await store.search(LogFilter(providers=("groq",)), limit=2, offset=0, sort_by="timestamp", order="desc")
    assert page["pagination"] == {"limit": 2, "offset": 0, "sort_by": "timestamp", "order": "desc", "total_count": 3}
    assert page["has_logs"] is True
    stats = await store.stats(LogFilter())
    assert stats["total_requests"] == 6
    assert stats["total_cost"] == pytest.approx(0.06)
    assert stats["average_latency"] == pytest.approx(350.0)
    assert stats["success_rate"] == pytest.approx(500 / 6)


async def test_delete_by_ids(store: LogStore) -> None:
    rows = [row_of(record(n), content=True) for n in range(3)]
    await store.write(rows)
    assert await store.delete([rows[0]["id"], rows[1]["id"], "unknown"]) == 2
    assert (await store.stats(LogFilter()))["total_requests"] == 1
    assert await store.delete([]) == 0


async def test_retention_by_age_and_by_count(store: LogStore) -> None:
    now = datetime.now(UTC)
    rows = []
    for n, age in enumerate((400, 200, 3, 2, 1)):
        row = row_of(record(n), content=True)
        row["timestamp"] = now - timedelta(days=age)
        rows.append(row)
    await store.write(rows)
    assert await store.prune(older_than_days=365, max_rows=None) == 1
    assert await store.prune(older_than_days=None, max_rows=2) == 2
    left = await store.search(LogFilter(), limit=10, offset=0, sort_by="timestamp", order="desc")
    assert [e["transcription_input"]["size_bytes"] for e in left["logs"]] == [1004, 1003]


async def test_migrate_adds_a_column_to_an_older_table(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        old, new = MetaData(), MetaData()
        Table("bifrost_stt_migrate_probe", old, Column("id", String(16), primary_key=True))
        Table("bifrost_stt_migrate_probe", new, Column("id", String(16), primary_key=True), Column("added", String(8)))
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: Table("bifrost_stt_migrate_probe", MetaData()).drop(sync, checkfirst=True))
        await migrate(engine, old)
        await migrate(engine, new)
        await migrate(engine, new)  # idempotent
        async with engine.connect() as conn:
            columns = await conn.run_sync(lambda sync: [c["name"] for c in inspect(sync).get_columns("bifrost_stt_migrate_probe")])
        assert columns == ["id", "added"]
    finally:
        await engine.dispose()


async def test_the_sink_batches_and_a_failing_store_drops_without_raising(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    sink = LogSink(LogsStoreConfig(enabled=True, path=str(tmp_path / "logs.db")), ClientConfig(),
                   on_drop=lambda reason, count: dropped.append((reason, count)))
    await sink.start()
    try:
        for n in range(5):
            sink.submit(record(n))
        await sink.flush()
        assert sink.store is not None
        assert (await sink.store.stats(LogFilter()))["total_requests"] == 5
        async with sink.store.engine.begin() as conn:
            await conn.run_sync(lambda sync: logs.drop(sync))  # every write fails from now on
        sink.submit(record(9))
        await sink.flush()
        assert dropped and dropped[-1][0].startswith("store_error") and dropped[-1][1] == 1
    finally:
        await sink.aclose()


async def test_records_queued_before_shutdown_are_written(tmp_path: Path) -> None:
    config = LogsStoreConfig(enabled=True, path=str(tmp_path / "logs.db"))
    sink = LogSink(config, ClientConfig())
    await sink.start()
    for n in range(7):
        sink.submit(record(n))
    await asyncio.sleep(0)  # the writer holds the first record and waits for the batch to fill
    await sink.aclose()
    reader = LogSink(config, ClientConfig(enable_logging=False))
    await reader.start()
    try:
        assert reader.store is not None
        assert (await reader.store.stats(LogFilter()))["total_requests"] == 7
    finally:
        await reader.aclose()


async def test_an_unreachable_postgres_drops_records_and_never_raises() -> None:
    dropped: list[tuple[str, int]] = []
    config = LogsStoreConfig(enabled=True, type="postgres", host="127.0.0.1", port=9, user="nobody",
                             password=Secret("s3cret-pw"), db_name="none")
    sink = LogSink(config, ClientConfig(), on_drop=lambda reason, count: dropped.append((reason, count)))
    await sink.start()  # logs an error, does not raise
    try:
        sink.submit(record(1))
        await sink.flush()
        assert sum(count for _, count in dropped) == 1
    finally:
        await sink.aclose()


def test_the_database_url_hides_the_password() -> None:
    url = url_for(LogsStoreConfig(enabled=True, type="postgres", user="u", password=Secret("s3cret-pw"), db_name="d"))
    assert "s3cret-pw" not in repr(url) and "s3cret-pw" not in str(url)
    assert url.drivername == "postgresql+psycopg" and url.query["sslmode"] == "disable"
