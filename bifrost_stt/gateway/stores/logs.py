"""The request-log store: one row per request, written in batches off the request path, searched by the
``/api/logs`` operations in upstream's LogEntry / SearchLogsResponse / LogStats shapes.

    request ends -> LogSink.submit(record)    put_nowait on a bounded queue: never waits, never raises
                    writer task               every FLUSH_EVERY, up to BATCH rows per INSERT (one transaction),
                                              each write bounded by WRITE_TIMEOUT
                    full queue / failed write records dropped, counted (bifrost_log_records_dropped_total)
                                              and logged at most once per LOG_EVERY seconds

Audio bytes are never stored: a row holds the upload's name, size and format. With
``disable_content_logging`` the transcript and the prompt are left out; usage (audio seconds) stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from bifrost_stt.gateway.stores.db import describe, make_engine, migrate, url_for
from bifrost_stt.kernel.record import RequestRecord
from bifrost_stt.kernel.settings import ClientConfig, LogsStoreConfig

log = logging.getLogger("bifrost_stt.logs")

QUEUE_SIZE = 10_000  # records waiting for the writer; beyond this they are dropped
BATCH = 500
FLUSH_EVERY = 0.25  # seconds the writer gathers records before one INSERT: a transaction per record costs more
WRITE_TIMEOUT = 10.0  # seconds one batch may take before it is given up (and its records dropped)
LOG_EVERY = 60.0
RETENTION_EVERY = 3600.0
MAX_LIMIT = 1000
SORT_COLUMNS = ("timestamp", "latency", "tokens", "cost")

metadata = MetaData()
logs = Table(
    "bifrost_stt_logs", metadata,
    Column("id", String(64), primary_key=True),
    Column("operation", String(64)),
    Column("object", String(32)),
    Column("provider", String(128), index=True),
    Column("model", String(256), index=True),
    Column("status", String(16), index=True),
    Column("status_code", Integer),
    Column("timestamp", DateTime(timezone=True), index=True),
    Column("latency", Float, index=True),
    Column("cost", Float),
    Column("number_of_retries", Integer),
    Column("fallback_index", Integer),
    Column("selected_key_id", String(128)),
    Column("selected_key_name", String(128)),
    Column("virtual_key_id", String(128)),
    Column("virtual_key_name", String(128)),
    Column("stream", Boolean),
    Column("audio_seconds", Float),
    Column("content", Text),  # what content_search looks in: the transcript (empty without content logging)
    # everything only read back, never filtered on, as one JSON document serialized once (orjson): six
    # JSON columns cost six encodings per row
    Column("body", Text),
)
BODY_FIELDS = ("params", "transcription_input", "transcription_output", "error_details", "cache_debug", "metadata")


def row_of(record: RequestRecord, *, content: bool) -> dict[str, Any]:
    """A finished record as a row. ``content=False`` keeps usage but not the transcript nor the prompt."""
    params = dict(record.params)
    if not content:
        params.pop("prompt", None)
    text = record.output_text if content else None
    output: dict[str, Any] = {}
    if text is not None:
        output["text"] = text
    if record.audio_seconds is not None:
        output["usage"] = {"type": "duration", "seconds": record.audio_seconds}
    meta: dict[str, Any] = {"operation": record.operation, "status_code": record.status_code,
                            "attempts": record.attempts}
    if record.pieces is not None:
        meta["pieces"] = record.pieces
    if record.first_token_ms is not None:
        meta["first_token_ms"] = record.first_token_ms
    if record.requested_model is not None:
        meta["requested"] = f"{record.requested_provider}/{record.requested_model}"
    body = {
        "params": params,
        "transcription_input": {k: v for k, v in (("filename", record.input_filename),
                                                  ("size_bytes", record.input_bytes)) if v is not None},
        "transcription_output": output or None,
        "error_details": record.error,
        "cache_debug": record.cache_debug,
        "metadata": meta,
    }
    return {
        "id": record.id,
        "operation": record.operation,
        "object": "transcription_stream" if record.stream else "transcription",
        "provider": record.provider or record.requested_provider,
        "model": record.model or record.requested_model,
        "status": record.status,
        "status_code": record.status_code,
        "timestamp": record.timestamp,
        "latency": record.latency_ms,
        "cost": record.cost,
        "number_of_retries": record.retries,
        "fallback_index": record.fallback_index,
        "selected_key_id": record.selected_key_id,
        "selected_key_name": record.selected_key_name,
        "virtual_key_id": record.virtual_key_id,
        "virtual_key_name": record.virtual_key_name,
        "stream": record.stream,
        "audio_seconds": record.audio_seconds,
        "content": text or "",
        "body": orjson.dumps({k: v for k, v in body.items() if v is not None}, default=str).decode(),
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def entry_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row in the LogEntry shape (absent values left out rather than null)."""
    stamp = _iso(row["timestamp"])
    entry: dict[str, Any] = {
        "id": row["id"], "status": row["status"], "object": row["object"], "timestamp": stamp,
        "created_at": stamp, "number_of_retries": row["number_of_retries"] or 0,
        "fallback_index": row["fallback_index"] or 0, "stream": bool(row["stream"]),
    }
    for name in ("provider", "model", "latency", "cost", "selected_key_id", "selected_key_name",
                 "virtual_key_id", "virtual_key_name"):
        if row[name] is not None:
            entry[name] = row[name]
    body = orjson.loads(row["body"]) if row["body"] else {}
    entry.update((name, body[name]) for name in BODY_FIELDS if body.get(name) is not None)
    meta = entry.setdefault("metadata", {})
    if row["audio_seconds"] is not None:
        meta["audio_seconds"] = row["audio_seconds"]
    return entry


@dataclass(frozen=True, slots=True)
class LogFilter:
    """The query parameters getLogs and getLogsStats share; lists come comma-separated."""

    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    selected_key_ids: tuple[str, ...] = ()
    virtual_key_ids: tuple[str, ...] = ()
    unmatchable: bool = False  # a filter on something never stored here (routing rules, tokens > 0)
    start_time: datetime | None = None
    end_time: datetime | None = None
    min_latency: float | None = None
    max_latency: float | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    missing_cost_only: bool = False
    content_search: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        c = logs.c
        clauses: list[ColumnElement[bool]] = []
        if self.unmatchable:
            clauses.append(c.id.is_(None))
        for column, values in ((c.provider, self.providers), (c.model, self.models), (c.status, self.status),
                               (c.object, self.objects), (c.selected_key_id, self.selected_key_ids),
                               (c.virtual_key_id, self.virtual_key_ids)):
            if values:
                clauses.append(column.in_(values))
        if self.start_time is not None:
            clauses.append(c.timestamp >= self.start_time)
        if self.end_time is not None:
            clauses.append(c.timestamp <= self.end_time)
        for column, low, high in ((c.latency, self.min_latency, self.max_latency),
                                  (c.cost, self.min_cost, self.max_cost)):
            if low is not None:
                clauses.append(column >= low)
            if high is not None:
                clauses.append(column <= high)
        if self.missing_cost_only:
            clauses.append(c.cost.is_(None))
        if self.content_search:
            clauses.append(c.content.icontains(self.content_search, autoescape=True))
        return clauses


class LogStore:
    """Reads and writes of the log table on one engine (tests use it directly)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def migrate(self) -> None:
        await migrate(self.engine, metadata)

    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(logs), list(rows))

    async def get(self, log_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(logs).where(logs.c.id == log_id))).mappings().first()
        return entry_of(row) if row is not None else None

    async def search(self, where: LogFilter, *, limit: int, offset: int, sort_by: str, order: str) -> dict[str, Any]:
        # tokens are not recorded for transcriptions: sorting by them keeps the time order
        column = {"latency": logs.c.latency, "cost": logs.c.cost}.get(sort_by, logs.c.timestamp)
        ordering = column.asc() if order == "asc" else column.desc()
        query = select(logs).where(*where.where()).order_by(ordering, logs.c.id).limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            stats = await self._stats(conn, where)
            any_row = (await conn.execute(select(logs.c.id).limit(1))).first() is not None
        return {
            "logs": [entry_of(row) for row in rows],
            "pagination": {"limit": limit, "offset": offset, "sort_by": sort_by, "order": order,
                           "total_count": stats["total_requests"]},
            "stats": stats,
            "has_logs": any_row,
        }

    async def stats(self, where: LogFilter) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            return await self._stats(conn, where)

    async def _stats(self, conn: Any, where: LogFilter) -> dict[str, Any]:
        c = logs.c
        query = select(
            func.count(),
            func.coalesce(func.sum(c.cost), 0.0),
            func.avg(c.latency),
            func.count().filter(c.status == "success"),
            func.count().filter(c.status != "processing"),
        ).where(*where.where())
        total, cost, latency, succeeded, completed = (await conn.execute(query)).one()
        return {
            "total_requests": int(total),
            "total_tokens": 0,
            "total_cost": float(cost or 0.0),
            "average_latency": float(latency or 0.0),
            "success_rate": (100.0 * succeeded / completed) if completed else 0.0,
        }

    async def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(logs).where(logs.c.id.in_(list(ids))))
        return int(result.rowcount or 0)

    async def prune(self, *, older_than_days: int | None, max_rows: int | None) -> int:
        """Retention: rows older than the age limit, then the oldest beyond the count limit."""
        removed = 0
        async with self.engine.begin() as conn:
            if older_than_days:
                cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
                removed += int((await conn.execute(delete(logs).where(logs.c.timestamp < cutoff))).rowcount or 0)
            if max_rows:
                edge = (await conn.execute(
                    select(logs.c.timestamp).order_by(logs.c.timestamp.desc()).offset(max_rows - 1).limit(1)
                )).scalar()
                if edge is not None:
                    result = await conn.execute(delete(logs).where(logs.c.timestamp < edge))
                    removed += int(result.rowcount or 0)
        return removed


class LogSink:
    """The gateway's log store: configured from ``logs_store`` + ``client``, fed by ``submit``."""

    def __init__(self, store: LogsStoreConfig, client: ClientConfig,
                 *, engine_factory: Callable[[], AsyncEngine] | None = None,
                 on_drop: Callable[[str, int], None] = lambda reason, count: None) -> None:
        self.config = store
        self.content = not client.disable_content_logging
        self.recording = store.enabled and client.enable_logging
        self.retention_days = store.retention_days or client.log_retention_days
        self._engine_factory = engine_factory or (lambda: make_engine(url_for(store)))
        self.store: LogStore | None = None
        self._queue: asyncio.Queue[RequestRecord | None] | None = None  # None: the writer's stop signal
        self._writer_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_warning = 0.0
        self._pending_drops = 0
        self._on_drop = on_drop

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    async def start(self) -> None:
        if not self.config.enabled:
            return
        engine = self._engine_factory()
        store = LogStore(engine)
        try:
            await store.migrate()
        except Exception as exc:
            # The store stays usable for reads later if the database comes back; writes are dropped meanwhile.
            log.error("the log store at %s could not be prepared (%s); request records will be dropped",
                      describe(engine.url), type(exc).__name__)
        self.store = store
        self._queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        if self.recording:
            self._writer_task = asyncio.create_task(self._writer(), name="bifrost-stt log writer")
        self._tasks.append(asyncio.create_task(self._retention(), name="bifrost-stt log retention"))

    def submit(self, record: RequestRecord) -> None:
        """Hand over one finished record. Never blocks, never raises."""
        queue = self._queue
        if queue is None or not self.recording:
            return
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            self._drop("queue_full", 1)

    def _drop(self, reason: str, count: int) -> None:
        self._on_drop(reason, count)
        self._pending_drops += count
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY:
            log.warning("request log store: %d record(s) dropped (%s); requests are unaffected",
                        self._pending_drops, reason)
            self._last_warning, self._pending_drops = now, 0

    async def _writer(self) -> None:
        assert self._queue is not None and self.store is not None
        queue, store = self._queue, self.store
        while True:
            first = await queue.get()
            if first is None:  # aclose: everything before it is written
                return
            batch = [first]
            await asyncio.sleep(FLUSH_EVERY)  # let the batch fill: one transaction for many records
            stop = False
            while len(batch) < BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._write(store, batch)
            if stop:
                return

    async def _write(self, store: LogStore, batch: list[RequestRecord]) -> None:
        try:
            rows = [row_of(record, content=self.content) for record in batch]
            async with asyncio.timeout(WRITE_TIMEOUT):
                await store.write(rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("log write failed", exc_info=True)
            self._drop(f"store_error:{type(exc).__name__}", len(batch))

    async def _retention(self) -> None:
        assert self.store is not None
        while True:
            try:
                removed = await self.store.prune(older_than_days=self.retention_days, max_rows=self.config.max_rows)
                if removed:
                    log.info("request log retention removed %d record(s)", removed)
            except Exception as exc:
                log.warning("request log retention failed (%s)", type(exc).__name__)
            await asyncio.sleep(RETENTION_EVERY)

    async def flush(self, timeout: float = 5.0) -> None:
        """Write what is queued now (shutdown, tests)."""
        queue, store = self._queue, self.store
        if queue is None or store is None:
            return
        batch: list[RequestRecord] = []
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                batch.append(item)
        if batch:
            try:
                async with asyncio.timeout(timeout):
                    await self._write(store, batch)
            except TimeoutError:
                self._drop("shutdown", len(batch))

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop: the writer finishes what was queued before (bounded by ``timeout``), then the engine closes."""
        writer, self._writer_task = self._writer_task, None
        if writer is not None and self._queue is not None:
            try:
                self._queue.put_nowait(None)
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            except (asyncio.QueueFull, TimeoutError):
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush(timeout)  # what a stuck or cancelled writer left
        if self.store is not None:
            await self.store.engine.dispose()
            self.store = None
        self._queue = None
