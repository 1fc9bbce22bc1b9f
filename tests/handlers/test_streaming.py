"""SSE streaming end to end: the openai SDK and raw HTTP -> a real gateway on loopback -> fake upstreams.

Upstreams that stream natively (gpt-4o-transcribe on OpenAI and Azure), slowly, that fail mid-stream,
fail before the first event, go quiet, and that do not stream at all (whisper-1, every Groq model).
Every event the client receives is checked against the 3.1 contract here, and the gateway runs with
the strict SSE validator, so an event breaking the contract also breaks the stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema_rs
import openai
import orjson
import pytest
from connexion.exceptions import NonConformingResponseBody

from bifrost_stt.server import app as app_module
from bifrost_stt.gateway.contract import loading as spec
from bifrost_stt.server.app import create_app
from bifrost_stt.kernel.canonical import StreamDelta, StreamDone, Usage
from bifrost_stt.gateway.routing.router import Served
from bifrost_stt.kernel.settings import GatewayConfig
from bifrost_stt.gateway.contract.validation import SSEResponseValidator, response_validators, validator_map
from bifrost_stt.handlers import outbound
from tests.audio import wav_bytes
from tests.fakes.openai import TRANSCRIPT
from tests.fakes.server import Reply, error_reply
from tests.support import config_with, serve

STREAMING_MODEL = "gpt-4o-transcribe"
WORDS = TRANSCRIPT.split()


# ------------------------------------------------------------------------------ contract checks


@functools.cache
def _contract_validator(name: str) -> Any:
    """A validator for one component schema of the served 3.1 contract (the document is the truth)."""
    contract = spec.load_contract()
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": contract["components"]})


def assert_conforms(payload: dict[str, Any]) -> None:
    name = "BifrostError" if "error" in payload else "TranscriptionStreamResponse"
    errors = [e.message for e in _contract_validator(name).iter_errors(payload)]
    assert not errors, f"{name} event breaks the contract: {errors}: {payload}"


# ------------------------------------------------------------------------------ gateways


@pytest.fixture
def start_gateway(run_gateway: Callable[..., str]) -> Callable[..., str]:
    """A gateway with its own configuration (timeouts, fallbacks), strict like the shared one."""
    return run_gateway


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="sk-client", max_retries=0)


def audio_file() -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(), "audio/wav")


# ------------------------------------------------------------------------------ raw SSE reading


@dataclass
class Received:
    """What a raw HTTP client got from a stream request: status, headers, events with arrival times."""

    status: int
    headers: httpx.Headers
    body: bytes
    events: list[tuple[float, Any]]  # (monotonic arrival time, parsed data or "[DONE]")
    sent_at: float

    @property
    def payloads(self) -> list[Any]:
        return [data for _, data in self.events]

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return [p for p in self.payloads if isinstance(p, dict) and p.get("type") == "transcript.text.delta"]

    @property
    def done(self) -> dict[str, Any]:
        (done,) = [p for p in self.payloads if isinstance(p, dict) and p.get("type") == "transcript.text.done"]
        return done


def post_stream(base_url: str, path: str, fields: dict[str, str], *, timeout: float = 10) -> Received:
    """POST a stream request and read the SSE body event by event, noting when each arrived."""
    events: list[tuple[float, Any]] = []
    body = bytearray()
    sent_at = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=timeout) as http:
        with http.stream("POST", path, data={**fields, "stream": "true"}, files={"file": audio_file()}) as r:
            pending = b""
            for chunk in r.iter_raw():
                now = time.monotonic()
                body.extend(chunk)
                pending += chunk
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    if r.headers.get("content-type", "").startswith("text/event-stream"):
                        assert event.startswith(b"data: "), event
                        data = event.removeprefix(b"data: ")
                        events.append((now, "[DONE]" if data == b"[DONE]" else orjson.loads(data)))
    return Received(r.status_code, r.headers, bytes(body), events, sent_at)


def assert_well_formed(got: Received, *, provider: str, model: str) -> None:
    """Deltas then done then [DONE]; schema-valid; indexes from 0; the deltas add up to the text."""
    assert got.status == 200, got.body
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.body.endswith(b"data: [DONE]\n\n")
    assert got.payloads[-1] == "[DONE]"
    payloads = got.payloads[:-1]
    for payload in payloads:
        assert_conforms(payload)
    assert [p["type"] for p in payloads] == ["transcript.text.delta"] * (len(payloads) - 1) + ["transcript.text.done"]
    assert [p["extra_fields"]["chunk_index"] for p in payloads] == list(range(len(payloads)))
    for p in payloads:
        extra = p["extra_fields"]
        assert extra["provider"] == provider and extra["model_requested"] == model
        assert extra["request_type"] == "transcription"
        assert isinstance(extra["latency"], int) and extra["latency"] >= 0
    assert "".join(d["delta"] for d in got.deltas) == got.done["text"]


# ------------------------------------------------------------------------------ native streams


def test_sdk_streams_native_model(client: openai.OpenAI, fake_openai: Any) -> None:
    stream = client.audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True)
    events = list(stream)
    assert [e.type for e in events] == ["transcript.text.delta"] * len(WORDS) + ["transcript.text.done"]
    assert "".join(e.delta for e in events[:-1]) == TRANSCRIPT
    done = events[-1]
    assert done.text == TRANSCRIPT
    assert done.usage is not None and done.usage.type == "tokens" and done.usage.total_tokens
    assert [e.model_extra["extra_fields"]["chunk_index"] for e in events] == list(range(len(events)))
    upstream = fake_openai.last
    assert upstream.field("stream") == "true"
    assert upstream.field("model") == STREAMING_MODEL
    assert upstream.headers["accept"] == "text/event-stream"


def test_unified_route_streams_with_done_marker(gateway_url: str, fake_openai: Any) -> None:
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    assert [d["delta"] for d in got.deltas] == [(" " if i else "") + w for i, w in enumerate(WORDS)]
    assert got.done["text"] == TRANSCRIPT
    assert got.done["usage"]["type"] == "tokens"
    assert got.headers["x-bifrost-provider"] == "openai"
    assert got.headers["cache-control"] == "no-cache"
    assert fake_openai.last.field("stream") == "true"


def test_unified_route_through_the_sdk(gateway_url: str, fake_openai: Any) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
    events = list(sdk.audio.transcriptions.create(model=f"openai/{STREAMING_MODEL}", file=audio_file(), stream=True))
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT


@pytest.mark.parametrize("route", ["openai/v1", "litellm/v1", "langchain/v1", "pydanticai/v1"])
def test_integration_routes_stream(gateway_url: str, fake_openai: Any, route: str) -> None:
    got = post_stream(gateway_url, f"/{route}/audio/transcriptions", {"model": STREAMING_MODEL})
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    assert got.done["text"] == TRANSCRIPT


def test_azure_sdk_streams(gateway_url: str, fake_azure: Any) -> None:
    sdk = openai.AzureOpenAI(
        azure_endpoint=f"{gateway_url}/openai", api_key="x", api_version="2024-10-21", max_retries=0
    )
    events = list(sdk.audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True))
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == TRANSCRIPT
    assert fake_azure.last.path == f"/openai/deployments/{STREAMING_MODEL}/audio/transcriptions"
    assert fake_azure.last.field("stream") == "true"


def test_logprobs_and_usage_are_relayed(gateway_url: str, fake_openai: Any) -> None:
    lp = [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]
    usage = {"type": "tokens", "input_tokens": 5, "input_token_details": {"text_tokens": 0, "audio_tokens": 5},
             "output_tokens": 1, "total_tokens": 6}
    fake_openai.enqueue(Reply(events=[
        {"type": "transcript.text.delta", "delta": "Hi", "logprobs": lp},
        {"type": "transcript.text.done", "text": "Hi", "logprobs": lp, "usage": usage},
    ]))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    assert got.deltas[0]["logprobs"] == lp
    assert got.done["logprobs"] == lp
    assert got.done["usage"] == usage


def test_the_stream_asks_upstream_for_text_events_only(gateway_url: str, fake_openai: Any) -> None:
    """A streaming model with srt + granularities: the stream still carries the transcript."""
    got = post_stream(gateway_url, "/openai/v1/audio/transcriptions", {
        "model": STREAMING_MODEL, "response_format": "srt", "timestamp_granularities[]": "word",
    })
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    assert got.done["text"] == TRANSCRIPT


# ------------------------------------------------------------------------------ no buffering


@pytest.mark.parametrize("path, model", [
    ("/v1/audio/transcriptions", f"openai/{STREAMING_MODEL}"),
    ("/openai/v1/audio/transcriptions", STREAMING_MODEL),
])
def test_events_reach_the_client_as_they_arrive(gateway_url: str, fake_openai: Any, path: str, model: str) -> None:
    delay = 0.3
    fake_openai.transcript = "one two three four five"
    fake_openai.event_delay = delay
    got = post_stream(gateway_url, path, {"model": model})
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    arrivals = [t for t, p in got.events if p != "[DONE]"]
    # the upstream sends 6 events 0.3 s apart: the last leaves 1.5 s after the first
    assert arrivals[-1] - arrivals[0] >= 5 * delay * 0.9
    # and the client had the first delta long before that: nothing on the way held it back
    assert arrivals[0] - got.sent_at < 5 * delay - 0.5
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(gap >= delay * 0.5 for gap in gaps), gaps
    latencies = [p["extra_fields"]["latency"] for p in got.payloads[1:-2]]
    assert all(lat >= delay * 1000 * 0.5 for lat in latencies), latencies  # per chunk: since the previous
    assert got.done["extra_fields"]["latency"] >= 5 * delay * 1000 * 0.9  # the done event: the total


def test_sdk_yields_the_first_delta_before_the_upstream_finishes(client: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.transcript = "one two three four five"
    fake_openai.event_delay = 0.3
    started = time.monotonic()
    stream = client.audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True)
    first = next(iter(stream))
    first_at = time.monotonic() - started
    rest = list(stream)
    total = time.monotonic() - started
    assert first.type == "transcript.text.delta" and first.delta == "one"
    assert rest[-1].type == "transcript.text.done"
    assert first_at < total - 1.0, (first_at, total)


# ------------------------------------------------------------------------------ failures


def test_setup_failure_is_a_plain_json_error(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.keys = {"sk-somebody-else"}
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert got.status == 401
    assert got.headers["content-type"] == "application/json"
    assert got.events == []
    body = orjson.loads(got.body)
    assert_conforms(body)
    assert body["status_code"] == 401 and "Incorrect API key" in body["error"]["message"]


def test_setup_failure_raises_in_the_sdk(client: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.keys = {"sk-somebody-else"}
    with pytest.raises(openai.AuthenticationError):
        list(client.audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True))


def test_an_answer_neither_sse_nor_json_to_a_stream_request_is_502(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(body="maintenance until noon", content_type="text/plain"))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert got.status == 502 and got.headers["content-type"] == "application/json"
    assert "text/event-stream" in orjson.loads(got.body)["error"]["message"]


def test_a_json_answer_to_a_stream_request_is_streamed_by_the_gateway(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(body={"text": TRANSCRIPT}))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert_well_formed(got, provider="openai", model=STREAMING_MODEL)
    assert got.done["text"] == TRANSCRIPT and fake_openai.last.field("stream") == "true"


def test_error_as_first_event_is_a_plain_json_error(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(events=[{"error": {"message": "model overloaded", "type": "server_error"}}]))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert got.status >= 500 and got.headers["content-type"] == "application/json"
    body = orjson.loads(got.body)
    assert_conforms(body)
    assert body["error"]["message"] == "model overloaded"


def test_setup_failure_falls_back_to_another_provider(gateway_url: str, fake_openai: Any, fake_groq: Any) -> None:
    fake_openai.enqueue(error_reply(503, "upstream overloaded", "server_error"))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {
        "model": f"openai/{STREAMING_MODEL}", "fallbacks": "groq/whisper-large-v3",
    })
    assert_well_formed(got, provider="groq", model="whisper-large-v3")
    assert got.done["text"] == TRANSCRIPT
    assert got.headers["x-bifrost-fallback-index"] == "1"
    assert len(fake_openai.requests) == 1 and len(fake_groq.requests) == 1


def _assert_ends_with_one_error(got: Received, status: int, provider: str = "openai") -> dict[str, Any]:
    assert got.status == 200  # the headers were out before the failure
    assert "[DONE]" not in got.payloads
    *events, error = got.payloads
    assert all(e["type"] == "transcript.text.delta" for e in events)
    assert_conforms(error)
    assert error["status_code"] == status and error["error"]["message"]
    assert error["extra_fields"]["provider"] == provider
    assert got.body.endswith(b"\n\n") and got.body.count(b'"error"') == 1
    return error


def test_mid_stream_error_event_is_sent_once(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(events=[
        {"type": "transcript.text.delta", "delta": "The"},
        {"type": "transcript.text.delta", "delta": " quick"},
        {"error": {"message": "the model crashed", "type": "server_error", "code": "boom"}},
        {"type": "transcript.text.delta", "delta": " never sent"},
    ]))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    error = _assert_ends_with_one_error(got, 502)
    assert [d["delta"] for d in got.deltas] == ["The", " quick"]
    assert error["error"]["message"] == "the model crashed" and error["error"]["code"] == "boom"


def test_upstream_ending_early_is_an_error_event(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"}]))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    error = _assert_ends_with_one_error(got, 502)
    assert "before transcript.text.done" in error["error"]["message"]


def test_sdk_raises_on_the_mid_stream_error(client: openai.OpenAI, fake_openai: Any) -> None:
    fake_openai.enqueue(Reply(events=[
        {"type": "transcript.text.delta", "delta": "The"},
        {"error": {"message": "the model crashed", "type": "server_error"}},
    ]))
    received: list[Any] = []
    with pytest.raises(openai.APIError, match="the model crashed"):
        for event in client.audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True):
            received.append(event)
    assert [e.delta for e in received] == ["The"]


def test_idle_upstream_ends_with_a_timeout_event(start_gateway: Any, fake_openai: Any) -> None:
    url = start_gateway(config_with(fake_openai.provider_config(stream_idle_timeout_in_seconds=0.5)))
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"}], stall=5))
    started = time.monotonic()
    got = post_stream(url, "/v1/audio/transcriptions", {"model": f"openai/{STREAMING_MODEL}"})
    assert time.monotonic() - started < 3
    error = _assert_ends_with_one_error(got, 504)
    assert "stream_idle_timeout_in_seconds" in error["error"]["message"]


def test_client_disconnect_closes_the_upstream(gateway_url: str, fake_openai: Any) -> None:
    fake_openai.transcript = " ".join(["word"] * 30)
    fake_openai.event_delay = 0.2
    stream = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key="x", max_retries=0) \
        .audio.transcriptions.create(model=STREAMING_MODEL, file=audio_file(), stream=True)
    assert next(iter(stream)).type == "transcript.text.delta"
    stream.close()
    upstream = fake_openai.wait_for(1)[0]
    deadline = time.monotonic() + 3
    while not upstream.disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.disconnected, "the upstream stream was still open 3 s after the client left"


# ------------------------------------------------------------------------------ streams the gateway makes


def test_non_streaming_model_is_streamed_by_the_gateway(client: openai.OpenAI, fake_openai: Any) -> None:
    events = list(client.audio.transcriptions.create(model="whisper-1", file=audio_file(), stream=True))
    assert events[-1].type == "transcript.text.done"
    assert all(e.type == "transcript.text.delta" for e in events[:-1]) and events[:-1]
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == TRANSCRIPT
    assert events[-1].usage is not None and events[-1].usage.type == "duration"
    upstream = fake_openai.last
    # known by name not to stream: a plain transcription, with segments for the deltas
    assert upstream.field("stream") is None and len(fake_openai.requests) == 1
    assert upstream.field("response_format") == "verbose_json"


def test_groq_is_streamed_by_the_gateway_segment_by_segment(gateway_url: str, fake_groq: Any) -> None:
    text = "First sentence here. Second one follows! And a third?"
    segments = ["First sentence here.", "Second one follows!", "And a third?"]
    fake_groq.enqueue(Reply(body={
        "task": "transcribe", "language": "english", "duration": 6.0, "text": text,
        "segments": [{"id": i, "start": 2.0 * i, "end": 2.0 * i + 2, "text": " " + t} for i, t in enumerate(segments)],
        "x_groq": {"id": "req_1"},
    }))
    got = post_stream(gateway_url, "/v1/audio/transcriptions", {"model": "groq/whisper-large-v3"})
    assert_well_formed(got, provider="groq", model="whisper-large-v3")
    assert [d["delta"] for d in got.deltas] == ["First sentence here.", " Second one follows!", " And a third?"]
    assert got.done["text"] == text
    upstream = fake_groq.last
    assert upstream.field("stream") is None and upstream.field("response_format") == "verbose_json"


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "verbose_json", "vtt"])
def test_synthesized_stream_carries_the_transcript_whatever_the_format(
    gateway_url: str, fake_openai: Any, fmt: str
) -> None:
    got = post_stream(gateway_url, "/openai/v1/audio/transcriptions", {"model": "whisper-1", "response_format": fmt})
    assert_well_formed(got, provider="openai", model="whisper-1")
    assert got.done["text"] == TRANSCRIPT


def test_groq_through_the_sdk(client: openai.OpenAI, fake_groq: Any) -> None:
    events = list(client.audio.transcriptions.create(model="groq/whisper-large-v3", file=audio_file(), stream=True))
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == TRANSCRIPT


# ------------------------------------------------------------------------------ the SSE validator


EVENT_SCHEMA = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["transcript.text.delta", "transcript.text.done"]},
                   "delta": {"type": "string"}},
}


def _sse_validator(*, strict: bool) -> type[SSEResponseValidator]:
    """The SSE validator an app gets (bound to that app's compiled-schema cache)."""
    bound: type[SSEResponseValidator] = response_validators(strict_sse=strict)["text/event-stream"]
    return bound


async def _through(validator_cls: type[SSEResponseValidator], chunks: list[bytes]) -> list[bytes]:
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        sent.append(message.get("body", b""))

    validator = validator_cls({"type": "http"}, schema=EVENT_SCHEMA, encoding="utf-8")
    wrapped = validator.wrap_send(send)
    for chunk in chunks:
        await wrapped({"type": "http.response.body", "body": chunk, "more_body": True})
    return sent


async def test_validator_forwards_every_chunk_at_once() -> None:
    chunks = [b'data: {"type": "transcript.text.del', b'ta", "delta": "a"}\n', b"\ndata: [DONE]\n\n"]
    assert await _through(_sse_validator(strict=True), chunks) == chunks


async def test_strict_validator_raises_on_a_breaking_event() -> None:
    with pytest.raises(NonConformingResponseBody, match="enum|transcript"):
        await _through(_sse_validator(strict=True), [b'data: {"type": "transcript.words"}\n\n'])
    with pytest.raises(NonConformingResponseBody, match="not JSON"):
        await _through(_sse_validator(strict=True), [b"data: {oops\n\n"])


async def test_lenient_validator_logs_and_forwards(caplog: pytest.LogCaptureFixture) -> None:
    chunks = [b'data: {"type": 3}\n\n']
    assert await _through(_sse_validator(strict=False), chunks) == chunks
    assert "does not conform" in caplog.text


def _breaks_the_stream(gateway_url: str) -> bytes:
    """The body a raw client gets when the gateway's strict validator stops the stream."""
    body = b""
    with httpx.Client(base_url=gateway_url, timeout=10) as http:
        with http.stream("POST", "/v1/audio/transcriptions", files={"file": audio_file()},
                         data={"model": f"openai/{STREAMING_MODEL}", "stream": "true"}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in r.iter_raw():
                    body += chunk
    return body


# Starlette builds an error response for the exception, then cannot send it (the headers are out).
_broken_stream = pytest.mark.filterwarnings("ignore:coroutine 'ServerErrorMiddleware.error_response':RuntimeWarning")


@_broken_stream
def test_the_gateway_validates_its_events_strictly(
    gateway_url: str, fake_openai: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proof the served app runs the strict validator: a delta of the wrong shape never leaves."""
    monkeypatch.setattr(outbound, "event_payload", lambda event, extra: {"type": "transcript.words", "extra_fields": extra})
    assert b"transcript.words" not in _breaks_the_stream(gateway_url)


@_broken_stream
def test_error_events_are_validated_against_the_error_schema(
    gateway_url: str, fake_openai: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"}, {"error": {"message": "x"}}]))
    monkeypatch.setattr(outbound, "envelope", lambda err: {"error": "a string", "status_code": "502"})
    assert b"a string" not in _breaks_the_stream(gateway_url)


# ------------------------------------------------------------------------------ handlers.outbound units


class Upstream:
    """A canonical event iterator that records being closed, with an optional stall or failure."""

    def __init__(self, events: list[Any], *, then: BaseException | float | None = None) -> None:
        self.events = list(events)
        self.then = then
        self.closed = False

    def __aiter__(self) -> Upstream:
        return self

    async def __anext__(self) -> Any:
        if self.events:
            return self.events.pop(0)
        if isinstance(self.then, BaseException):
            raise self.then
        if isinstance(self.then, float):
            await asyncio.sleep(self.then)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


def _served(idle: float = 60.0) -> Served:
    return Served("openai", "gpt-4o-transcribe", "gpt-4o-transcribe", 0, time.perf_counter(), reported="openai",
                  stream_idle_timeout=idle)


async def _body(upstream: Upstream, idle: float = 5.0) -> list[Any]:
    chunks = [c async for c in outbound.sse_events(upstream, _served(idle))]
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
    return [c[6:-2].decode() if c == outbound.DONE_MARKER else orjson.loads(c[6:-2]) for c in chunks]


async def test_sse_events_shape_and_indexes() -> None:
    upstream = Upstream([StreamDelta("a"), StreamDelta("b"), StreamDone("ab", usage=Usage(type="duration", seconds=2))])
    events = await _body(upstream)
    assert events[-1] == "[DONE]"
    assert [e["extra_fields"]["chunk_index"] for e in events[:-1]] == [0, 1, 2]
    assert events[2]["usage"] == {"type": "duration", "seconds": 2}
    for e in events[:-1]:
        assert_conforms(e)
    assert upstream.closed


async def test_sse_events_idle_timeout_is_one_504_event() -> None:
    upstream = Upstream([StreamDelta("a")], then=10.0)
    started = time.monotonic()
    events = await _body(upstream, idle=0.2)
    assert time.monotonic() - started < 2
    assert events[0]["delta"] == "a"
    assert len(events) == 2 and events[1]["status_code"] == 504
    assert_conforms(events[1])
    assert upstream.closed


async def test_sse_events_a_bug_of_ours_is_one_500_event() -> None:
    upstream = Upstream([StreamDelta("a")], then=KeyError("oops"))
    events = await _body(upstream)
    assert events[1]["status_code"] == 500 and "oops" not in json.dumps(events[1])
    assert upstream.closed


async def test_sse_response_cancels_the_body_when_the_client_leaves() -> None:
    """Also on servers speaking ASGI 2.4, where Starlette itself stops watching for disconnects."""
    upstream = Upstream([StreamDelta("a")], then=30.0)
    response = outbound.stream_response(upstream, _served(), original_model="m")
    sent: list[Any] = []
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await messages.get()

    async def send(message: Any) -> None:
        sent.append(message)
        if message.get("body", b"").startswith(b"data: "):
            messages.put_nowait({"type": "http.disconnect"})  # the client leaves after the first event

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
    await asyncio.wait_for(response(scope, receive, send), timeout=3)
    assert upstream.closed
    assert sent[0]["type"] == "http.response.start"
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]


# ------------------------------------------------------------------------------ docs/streaming.md


def test_docs_say_which_providers_stream_natively() -> None:
    """docs/streaming.md has one row per registry kind, and its yes/no is the kind's declared native_stream."""
    from pathlib import Path

    from bifrost_stt.providers import registry

    doc = (Path(__file__).parents[2] / "docs" / "streaming.md").read_text(encoding="utf-8")
    table = doc.partition("## Which providers stream natively")[2]
    rows = {
        cells[0].strip("` "): cells[1].strip()
        for line in table.splitlines()
        if line.startswith("| `") and len(cells := line.strip("|").split("|")) >= 2
    }
    declared = {kind: "yes" if registry.capabilities(kind).native_stream else "no" for kind in registry.known()}
    assert rows == declared, "update the table in docs/streaming.md to match the providers' capabilities"


def test_custom_named_provider_events_name_it_by_its_name(start_gateway: Any, fake_openai: Any) -> None:
    """A named custom provider is reported by its configured name in every event, the error included
    (the overlay relaxes extra_fields.provider from the enum; the strict validator checks every event)."""
    from dataclasses import replace

    url = start_gateway(config_with(replace(fake_openai.provider_config(), id="eu-openai")))
    fake_openai.enqueue(Reply(events=[{"type": "transcript.text.delta", "delta": "The"}, {"error": {"message": "x"}}]))
    got = post_stream(url, "/v1/audio/transcriptions", {"model": f"eu-openai/{STREAMING_MODEL}"})
    error = _assert_ends_with_one_error(got, 502, provider="eu-openai")
    assert got.deltas[0]["extra_fields"]["provider"] == "eu-openai"
    assert got.headers["x-bifrost-provider"] == "eu-openai"
    assert error["extra_fields"]["provider"] == "eu-openai"
    assert fake_openai.last.field("model") == STREAMING_MODEL and fake_openai.last.field("stream") == "true"
    fake_openai.reset()
    whole = post_stream(url, "/v1/audio/transcriptions", {"model": f"eu-openai/{STREAMING_MODEL}"})
    assert whole.status == 200 and whole.payloads[-1] == "[DONE]"
    assert {p["extra_fields"]["provider"] for p in whole.payloads if isinstance(p, dict)} == {"eu-openai"}
