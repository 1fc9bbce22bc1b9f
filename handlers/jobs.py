"""The async transcription operations: declared by the contract, answered 501 until jobs exist."""

from __future__ import annotations

from starlette.responses import Response

from gateway.errors import NotImplementedYet


async def create_async_transcription() -> Response:
    raise NotImplementedYet(
        "async transcription jobs are not available in this gateway yet; use POST /v1/audio/transcriptions"
    )


async def get_async_transcription_job(job_id: str) -> Response:
    raise NotImplementedYet("async transcription jobs are not available in this gateway yet")
