"""CPU per request of what observing a request costs, in process, with and without the request-log store.

    .venv/bin/python bench/logging_cost.py [--requests 5000] [--postgres postgresql+psycopg://...]

A 100 KB request's record (one attempt, a 200-character transcript) goes through what the gateway does
when a request ends: metrics (``metrics.observe``), the request line (``logline.emit``, at INFO into a
discarded stream), and with a store ``LogSink.submit`` plus the writer's batched INSERTs, drained at the
end. CPU is process time (all threads: aiosqlite and psycopg work included) divided by the requests.
It prints figures; it asserts nothing. The store's share is the difference between the two lines.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import tempfile
import time
from pathlib import Path

from bifrost_stt.gateway.observe import logline, metrics
from bifrost_stt.gateway.stores.db import make_engine
from bifrost_stt.gateway.stores.logs import LogSink
from bifrost_stt.kernel.record import RequestRecord
from bifrost_stt.kernel.settings import ClientConfig, LogsStoreConfig


def record(n: int) -> RequestRecord:
    rec = RequestRecord(operation="createTranscription", route="/v1/audio/transcriptions")
    rec.requested_provider = rec.provider = "openai"
    rec.requested_model = rec.model = "whisper-1"
    rec.params = {"response_format": "json", "language": "en"}
    rec.input_filename, rec.input_bytes = "speech.wav", 100_000
    rec.selected_key_id = rec.selected_key_name = "main"
    rec.attempts.append({"provider": "openai", "model": "whisper-1", "status": 200, "key_id": "main",
                         "key_name": "main", "fallback_index": 0, "retry": 0, "latency_ms": 3.2})
    rec.output_text = ("word " * 40)[:200]
    rec.audio_seconds = 3.1
    rec.finish(200)
    return rec


async def measure(requests: int, sink: LogSink | None) -> float:
    records = [record(n) for n in range(requests)]
    if sink is not None:
        await sink.start()
    start = time.process_time()
    for n, rec in enumerate(records):
        metrics.observe(rec)
        logline.emit(rec, "POST")
        if sink is not None:
            sink.submit(rec)
        if n % 50 == 0:
            await asyncio.sleep(0)  # the writer runs between requests, as it does in the server
    if sink is not None:
        await sink.aclose()  # drains the queue
    return (time.process_time() - start) / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--postgres", help="also measure a PostgreSQL store at this SQLAlchemy URL")
    args = parser.parse_args()
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    await measure(500, None)  # warm-up: label children created, code paths compiled
    base = await measure(args.requests, None)
    print(f"metrics + request line, no store:        {base:7.1f} µs CPU per request")
    with tempfile.TemporaryDirectory() as tmp:
        store = LogsStoreConfig(enabled=True, path=str(Path(tmp) / "logs.db"))
        sqlite = await measure(args.requests, LogSink(store, ClientConfig()))
    print(f"... + SQLite log store (batched writes):  {sqlite:7.1f} µs CPU per request "
          f"(store: {sqlite - base:+.1f} µs)")
    if args.postgres:
        url = args.postgres
        pg = await measure(args.requests, LogSink(LogsStoreConfig(enabled=True), ClientConfig(),
                                                  engine_factory=lambda: make_engine(url)))
        print(f"... + PostgreSQL log store:               {pg:7.1f} µs CPU per request (store: {pg - base:+.1f} µs)")


if __name__ == "__main__":
    asyncio.run(main())
