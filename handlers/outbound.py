"""HTTP out: canonical results, stream events and errors -> responses in the contract's shapes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bifrost_stt.gateway.render import formats
from bifrost_stt.kernel.canonical import TEXT_FORMATS, StreamDelta, StreamDone, StreamEvent, TranscriptionResult
from bifrost_stt.kernel.errors import GatewayError, UpstreamTimeout, envelope
from bifrost_stt.gateway.observe import metrics
from bifrost_stt.gateway.routing.router import Served
from bifrost_stt.handlers.recording import note_stream_done, note_stream_error
from bifrost_stt.kernel.record import current

log = logging.getLogger("bifrost_stt.handlers")

JSON = "application/json"
PLAIN = "text/plain; charset=utf-8"
SSE = "text/event-stream"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=dict(headers or {}))


def error_response(err: GatewayError) -> Response:
    return json_response(envelope(err), err.status, err.headers_for_client())


def extra_fields(served: Served, *, latency_ms: int, chunk_index: int = 0) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "request_type": "transcription",
        "provider": served.reported,
        "model_requested": served.model,
        "model_deployment": served.deployment,
        "latency": latency_ms,
        "chunk_index": chunk_index,
    }
    if served.pieces > 1:  # long audio, split by the gateway (bifrost_stt.gateway.longaudio)
        extra["pieces"] = served.pieces
    return extra


def header_value(value: str) -> str:
    """Client-chosen text as a header value: as is when printable ASCII, else percent-encoded (UTF-8), so a
    model name outside Latin-1 (or with a control character) can never break the response."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="/:@-._~+!$&'()*,;=")


def route_headers(served: Served, original_model: str) -> dict[str, str]:
    headers = {
        "x-bifrost-provider": header_value(served.provider),
        "x-bifrost-original-model": header_value(original_model),
        "x-bifrost-resolved-model": header_value(served.deployment),
    }
    if served.fallback_index > 0:
        headers["x-bifrost-fallback-index"] = str(served.fallback_index)
    return headers


def result_response(
    result: TranscriptionResult,
    served: Served,
    *,
    response_format: str,
    granularities: tuple[str, ...],
    original_model: str,
    text_as_plain: bool,
    cache_debug: Mapping[str, Any] | None = None,
) -> Response:
    latency_ms = int((time.perf_counter() - served.started) * 1000)
    rendered = formats.render(result, response_format, granularities=granularities)
    headers = route_headers(served, original_model)
    if isinstance(rendered, str):
        if text_as_plain and response_format in TEXT_FORMATS:
            return Response(rendered.encode("utf-8"), media_type=PLAIN, headers=headers)
        rendered = {"text": rendered}
    rendered["extra_fields"] = extra_fields(served, latency_ms=latency_ms)
    if cache_debug is not None:
        rendered["extra_fields"]["cache_debug"] = cache_debug
    return json_response(rendered, headers=headers)


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE_MARKER = b"data: [DONE]\n\n"

OnDone = Callable[[StreamDone], Awaitable[Mapping[str, Any] | None]]
"""Called with the done event before it is sent; what it returns joins that event's extra_fields (the cache
stores the answer there and adds cache_debug). It must not raise."""


def event_payload(event: StreamEvent, extra: dict[str, Any]) -> dict[str, Any]:
    """One canonical event in the contract's TranscriptionStreamResponse shape."""
    if isinstance(event, StreamDelta):
        payload: dict[str, Any] = {"type": "transcript.text.delta", "delta": event.delta}
    else:
        payload = {"type": "transcript.text.done", "text": event.text}
        usage = formats.usage_dict(event.usage)
        if usage:
            payload["usage"] = usage
    if event.logprobs:
        payload["logprobs"] = [
            {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)} for lp in event.logprobs
        ]
    payload["extra_fields"] = extra
    return payload


async def sse_events(
    events: AsyncIterator[StreamEvent],
    served: Served,
    on_done: OnDone | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: deltas, the done event, then [DONE]; a failure mid-stream is one error event.

    Each event is yielded as soon as the upstream gives it (nothing is gathered). ``chunk_index``
    counts events from 0; a delta's ``latency`` is the time since the previous event (for the first,
    since the upstream call started) and the done event's is the total. A gap longer than
    ``served.stream_idle_timeout`` ends the stream with a 504 error event. The error event is the last thing sent
    (no [DONE] after it): the stream is incomplete and the marker would say otherwise; the SDKs raise
    on it. The upstream iterator is closed on every exit, cancellation included, so its connection is
    released at once.
    """
    previous = served.started
    idle_timeout = served.stream_idle_timeout
    index = 0
    record = current()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    event = await anext(events)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(
                    f"{served.provider} sent nothing for {idle_timeout:g} s mid-stream; raise "
                    f"network_config.stream_idle_timeout_in_seconds if the model is slow",
                    provider=served.provider, model=served.model,
                ) from None
            now = time.perf_counter()
            if record is not None:
                if index == 0:
                    record.first_token_ms = (now - record.started) * 1000.0
                elif isinstance(event, StreamDelta):
                    metrics.inter_token(record, now - previous)
                if not isinstance(event, StreamDelta):
                    note_stream_done(event.text, event.usage)
            since = previous if isinstance(event, StreamDelta) else served.started
            extra = extra_fields(served, latency_ms=int((now - since) * 1000), chunk_index=index)
            if on_done is not None and isinstance(event, StreamDone):
                extra.update(await on_done(event) or {})
            previous = now
            index += 1
            yield _event(event_payload(event, extra))
    except GatewayError as err:
        # Named as in every other event of this stream.
        err.provider = served.reported
        err.model = err.model or served.model
        note_stream_error(err)
        yield _event(envelope(err))
        return
    except Exception:  # a bug of ours mid-stream: tell the client once, keep the trace in the log
        log.exception("stream failed")
        failure = GatewayError("the stream failed inside the gateway; the details are in its log")
        note_stream_error(failure)
        yield _event(envelope(failure))
        return
    finally:
        await _close(events)
    yield DONE_MARKER


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    """Close the upstream iterator (and so its connection), shielded: this runs while being cancelled."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await asyncio.shield(aclose())
    except (Exception, asyncio.CancelledError):
        log.debug("closing the upstream stream failed", exc_info=True)


class SSEResponse(StreamingResponse):
    """A StreamingResponse that always watches for the client going away.

    Starlette stops listening for ``http.disconnect`` on servers speaking ASGI spec 2.4+, relying on
    the next write failing; for a stream waiting on a slow upstream that write may be a minute away.
    Watching here makes a disconnect cancel the body (and so the upstream request) at once on any server.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.ensure_future(self.stream_response(send))
        gone = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({body, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body, gone):
                task.cancel()
            await asyncio.gather(body, gone, return_exceptions=True)
        failure = body.exception() if body.done() and not body.cancelled() else None
        if failure is not None and not isinstance(failure, OSError):  # OSError: the client left mid-write
            raise failure


def stream_response(
    events: AsyncIterator[StreamEvent], served: Served, *, original_model: str, on_done: OnDone | None = None
) -> Response:
    """``text/event-stream`` for an upstream stream that is already open (its first event received)."""
    headers = route_headers(served, original_model)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"  # nginx and friends: do not buffer this response
    return SSEResponse(
        sse_events(events, served, on_done), media_type=SSE, headers=headers
    )
