"""The one line per request people read, and the JSON formatter behind ``--log-format json``.

    INFO:     POST /v1/audio/transcriptions 200 812ms provider=openai model=whisper-1 audio=3.20s fallback=0 id=...

With ``--log-format json`` every log line of the gateway is one JSON object (``time``, ``level``, ``logger``,
``message``), and the request line adds its fields (``route``, ``status``, ``latency_ms``, ...). Fields are
names and numbers the record carries: never a key value, never the transcript.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from bifrost_stt.kernel.record import RequestRecord

access = logging.getLogger("bifrost_stt.access")
FIELDS = "request_fields"


def fields_of(record: RequestRecord, method: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": record.id,
        "method": method,
        "route": record.route,
        "operation": record.operation,
        "status": record.status_code,
        "latency_ms": round(record.latency_ms or 0.0, 1),
        "provider": record.provider or record.requested_provider,
        "model": record.model or record.requested_model,
        "audio_seconds": record.audio_seconds,
        "fallback_index": record.fallback_index,
        "retries": record.retries,
        "stream": record.stream,
    }
    if record.selected_key_name:
        fields["key_name"] = record.selected_key_name
    if record.virtual_key_name:
        fields["virtual_key_name"] = record.virtual_key_name
    if record.error:
        inner = record.error.get("error") or {}
        fields["error_type"] = inner.get("type")
        fields["error_code"] = inner.get("code")
    return fields


def emit(record: RequestRecord, method: str) -> None:
    """Log the request line (at INFO on ``bifrost_stt.access``)."""
    if not access.isEnabledFor(logging.INFO):
        return
    fields = fields_of(record, method)
    audio = f" audio={record.audio_seconds:.2f}s" if record.audio_seconds is not None else ""
    access.info(
        "%s %s %s %dms provider=%s model=%s%s fallback=%d id=%s", method, record.route, record.status_code,
        int(record.latency_ms or 0), fields["provider"] or "-", fields["model"] or "-", audio,
        record.fallback_index, record.id, extra={FIELDS: fields},
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the request line's fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, FIELDS, None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()
