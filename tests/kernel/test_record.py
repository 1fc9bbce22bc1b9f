"""The request record: one per request, found through the context, closed with its status and latency."""

from __future__ import annotations

import asyncio

from bifrost_stt.kernel.record import RequestRecord, bind, current


def test_outside_a_request_there_is_no_record() -> None:
    assert current() is None


async def test_the_bound_record_is_seen_by_tasks_started_inside_and_only_there() -> None:
    record = RequestRecord("createTranscription")

    async def fill() -> None:
        found = current()
        assert found is record
        found.provider = "openai"

    with bind(record):
        await asyncio.create_task(fill())
    assert current() is None and record.provider == "openai"


def test_finish_sets_the_status_from_the_status_code() -> None:
    ok, failed = RequestRecord("createTranscription"), RequestRecord("createTranscription")
    ok.finish(200)
    failed.finish(429, {"type": "rate_limited", "message": "slow down"})
    assert (ok.status, ok.status_code, ok.error) == ("success", 200, None)
    assert (failed.status, failed.status_code) == ("error", 429) and failed.latency_ms is not None
