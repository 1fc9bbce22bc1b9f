"""Optional OpenTelemetry traces: a span per request and one per upstream attempt, when OTEL_* asks for them.

Off unless the standard environment says where spans go (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``; ``OTEL_SDK_DISABLED=true`` wins) and
the SDK is installed (``pip install 'bifrost-stt[otel]'``). Spans are built from the finished record, with
the times it measured, so tracing adds nothing to a request's path and nothing when it is off. Attributes
are names and numbers: provider, model, key name, status; never a key value, never the transcript.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from bifrost_stt.kernel.record import RequestRecord

log = logging.getLogger("bifrost_stt.observe")

_tracer: Any = None
_checked = False


def wanted(environ: Any = os.environ) -> bool:
    if str(environ.get("OTEL_SDK_DISABLED", "")).lower() == "true":
        return False
    exporter = str(environ.get("OTEL_TRACES_EXPORTER", "")).lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(exporter: Any = None) -> bool:
    """Start tracing in this process (once). ``exporter`` replaces the one the environment names (tests)."""
    global _tracer, _checked
    if _checked and exporter is None:
        return _tracer is not None
    _checked = True
    if exporter is None and not wanted():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        log.warning("OTEL_* is set but the OpenTelemetry SDK is not installed: pip install 'bifrost-stt[otel]'")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                        "bifrost-stt")}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_* is set but the OTLP exporter is not installed: "
                        "pip install 'bifrost-stt[otel]'")
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("bifrost_stt")
    log.info("OpenTelemetry traces on")
    return True


def emit(record: RequestRecord, method: str) -> None:
    """The request's span and its attempts' child spans, from the finished record."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    # perf_counter marks -> wall-clock nanoseconds
    now_ns, now_perf = time.time_ns(), time.perf_counter()

    def wall(perf: float) -> int:
        return now_ns - int((now_perf - perf) * 1e9)

    start = wall(record.started)
    end = start + int((record.latency_ms or 0.0) * 1e6)
    attributes = {
        "http.request.method": method, "http.route": record.route or "", "bifrost.operation": record.operation,
        "http.response.status_code": record.status_code or 0, "bifrost.provider": record.provider or "",
        "bifrost.model": record.model or record.requested_model or "", "bifrost.fallback_index": record.fallback_index,
        "bifrost.retries": record.retries, "bifrost.request_id": record.id, "bifrost.stream": record.stream,
    }
    if record.audio_seconds is not None:
        attributes["bifrost.audio_seconds"] = record.audio_seconds
    if record.selected_key_name:
        attributes["bifrost.key_name"] = record.selected_key_name
    span = tracer.start_span(f"{method} {record.route}", start_time=start, attributes=attributes,
                             kind=trace.SpanKind.SERVER)
    if record.status != "success":
        span.set_status(Status(StatusCode.ERROR))
    context = trace.set_span_in_context(span)
    for attempt in record.attempts:
        if attempt.get("latency_ms") is None or attempt.get("start_ms") is None:
            continue
        begin = start + int(float(attempt["start_ms"]) * 1e6)
        child = tracer.start_span(
            f"upstream {attempt.get('provider')}", context=context, start_time=begin, kind=trace.SpanKind.CLIENT,
            attributes={"bifrost.provider": str(attempt.get("provider") or ""),
                        "bifrost.model": str(attempt.get("model") or ""),
                        "bifrost.key_name": str(attempt.get("key_name") or ""),
                        "bifrost.retry": int(attempt.get("retry") or 0),
                        "bifrost.fallback_index": int(attempt.get("fallback_index") or 0),
                        "http.response.status_code": int(attempt.get("status") or 0)},
        )
        if int(attempt.get("status") or 0) >= 400:
            child.set_status(Status(StatusCode.ERROR))
        child.end(end_time=begin + int(float(attempt["latency_ms"]) * 1e6))
    span.end(end_time=end)
