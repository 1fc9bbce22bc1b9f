"""One function per operationId. ``operations(gateway)`` is the table the app's resolver reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.handlers.governance import GovernanceHandlers
from bifrost_stt.handlers.cache import CacheHandlers
from bifrost_stt.handlers.health import HealthHandlers
from bifrost_stt.handlers.jobs import JobHandlers
from bifrost_stt.handlers.transcriptions import TranscriptionHandlers


def operations(gateway: Gateway) -> dict[str, Callable[..., Awaitable[Any]]]:
    table: dict[str, Callable[..., Awaitable[Any]]] = {
        "getHealth": HealthHandlers(gateway).get_health,
    }
    table.update(TranscriptionHandlers(gateway).operations())
    table.update(JobHandlers(gateway).operations())
    table.update(GovernanceHandlers(gateway).operations())
    table.update(CacheHandlers(gateway).operations())
    return table
