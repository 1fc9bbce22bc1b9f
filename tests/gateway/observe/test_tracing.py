"""OpenTelemetry: off without OTEL_*; with an exporter, one server span per request and a client span per
upstream attempt, carrying names and numbers, never a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bifrost_stt.gateway.observe import tracing
from tests.audio import wav_bytes
from tests.fakes.faults import FaultyOpenAI, status
from tests.support import config_with

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def test_off_without_the_environment() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup(exporter)
    yield exporter
    tracing._tracer = None


def test_a_span_per_request_and_per_attempt(run_gateway: Any, spans: InMemorySpanExporter) -> None:
    with FaultyOpenAI() as openai:
        url = run_gateway(config_with(openai.provider_config(max_retries=1, retry_backoff_initial=10,
                                                             retry_backoff_max=20)))
        openai.enqueue(status(503, "overloaded"), path="/v1/audio/transcriptions")
        files = {"file": ("a.wav", wav_bytes(), "audio/wav")}
        r = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files=files)
        assert r.status_code == 200
        secrets = set(openai.keys)
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.name == "POST /v1/audio/transcriptions"]
    attempts = sorted((s for s in finished if s.name == "upstream openai"), key=lambda s: s.start_time or 0)
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 200]
    assert all(a.parent is not None and a.parent.span_id == server.context.span_id for a in attempts)
    assert server.attributes["bifrost.retries"] == 1 and server.attributes["http.response.status_code"] == 200
    assert server.start_time <= attempts[0].start_time <= attempts[1].end_time <= server.end_time
    text = repr([dict(s.attributes or {}) for s in finished])
    assert not any(secret in text for secret in secrets)
