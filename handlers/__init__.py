"""One function per operationId. ``operations(gateway)`` is the table the app's resolver reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.service import Gateway
from handlers.health import HealthHandlers
from handlers.jobs import JobHandlers
from handlers.transcriptions import TranscriptionHandlers


def operations(gateway: Gateway) -> dict[str, Callable[..., Awaitable[Any]]]:
    table: dict[str, Callable[..., Awaitable[Any]]] = {
        "getHealth": HealthHandlers(gateway).get_health,
    }
    table.update(TranscriptionHandlers(gateway).operations())
    table.update(JobHandlers(gateway).operations())
    return table
