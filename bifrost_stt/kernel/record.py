"""What happened to one request: filled in by the layers it passes through, read once when it ends.

The server opens a ``RequestRecord`` for each inference request and binds it to the request's context
(``bind``); routing, governance, the cache and the handlers fill in what they learn (``current()`` gives
the record of the request being served, or ``None`` outside one, so callers must not assume it exists).
When the request ends, observers (metrics, the request-log store, the access log) read the finished record.
It carries names, never secrets: a key's name and id, a virtual key's name and id, never their values.
Audio bytes are never stored here; ``output_text`` is the transcript, dropped when content logging is off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["processing", "success", "error"]


@dataclass(slots=True)
class RequestRecord:
    operation: str  # the operationId served
    route: str | None = None  # the path template it came in on ("/v1/audio/transcriptions")
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)
    # what the client asked for
    requested_provider: str | None = None
    requested_model: str | None = None
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # response_format, language, ... (no audio, no keys)
    input_filename: str | None = None
    input_bytes: int | None = None
    # what served it
    provider: str | None = None  # the provider's configured name (a custom provider's own name)
    model: str | None = None  # the model or deployment the upstream was asked for
    selected_key_id: str | None = None
    selected_key_name: str | None = None
    fallback_index: int = 0
    retries: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # governance and the cache
    virtual_key_id: str | None = None
    virtual_key_name: str | None = None
    cache_debug: dict[str, Any] | None = None
    # the outcome
    status: Status = "processing"
    status_code: int | None = None
    error: dict[str, Any] | None = None  # the Bifrost error's fields (type, code, message), already scrubbed
    latency_ms: float | None = None  # end to end, as the client saw it
    upstream_latency_ms: float | None = None
    first_token_ms: float | None = None
    audio_seconds: float | None = None
    cost: float | None = None  # USD; None means unknown, never "free"
    output_text: str | None = None
    pieces: int | None = None  # long audio: how many pieces served it
    # the work outlives the HTTP response (an async job): whoever set this finishes and emits the record
    detached: bool = False

    def finish(self, status_code: int, error: dict[str, Any] | None = None) -> None:
        """Close the record: success for 2xx, error otherwise; latency measured from ``started``."""
        self.status_code = status_code
        self.status = "success" if 200 <= status_code < 300 and error is None else "error"
        self.error = error
        self.latency_ms = (time.perf_counter() - self.started) * 1000.0


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("bifrost_stt_request_record", default=None)


def current() -> RequestRecord | None:
    """The record of the request being served in this context, if any."""
    return _CURRENT.get()


@contextmanager
def bind(record: RequestRecord) -> Iterator[RequestRecord]:
    """Make ``record`` the current one for the duration of the block (tasks started inside inherit it)."""
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)
