"""One function per operationId. ``operations(gateway)`` is the table the app's resolver reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.service import Gateway
from handlers import jobs
from handlers.health import HealthHandlers
from handlers.transcriptions import TranscriptionHandlers


def operations(gateway: Gateway) -> dict[str, Callable[..., Awaitable[Any]]]:
    table: dict[str, Callable[..., Awaitable[Any]]] = {
        "createAsyncTranscription": jobs.create_async_transcription,
        "getAsyncTranscriptionJob": jobs.get_async_transcription_job,
        "getHealth": HealthHandlers(gateway).get_health,
    }
    table.update(TranscriptionHandlers(gateway).operations())
    return table
