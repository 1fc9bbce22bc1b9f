"""HTTP out: canonical results, stream events and errors -> responses in the contract's shapes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from gateway import formats
from gateway.canonical import TEXT_FORMATS, StreamDelta, StreamDone, StreamEvent, TranscriptionResult
from gateway.errors import GatewayError, UpstreamTimeout, envelope
from gateway.router import Served

log = logging.getLogger("bifrost_stt.handlers")

JSON = "application/json"
PLAIN = "text/plain; charset=utf-8"
SSE = "text/event-stream"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=dict(headers or {}))


def error_response(err: GatewayError) -> Response:
    return json_response(envelope(err), err.status, err.headers_for_client())


def extra_fields(served: Served, kind: str, *, latency_ms: int, chunk_index: int = 0) -> dict[str, Any]:
    return {
        "request_type": "transcription",
        "provider": kind,
        "model_requested": served.model,
        "model_deployment": served.deployment,
        "latency": latency_ms,
        "chunk_index": chunk_index,
    }


def route_headers(served: Served, original_model: str) -> dict[str, str]:
    headers = {
        "x-bifrost-provider": served.provider,
        "x-bifrost-original-model": original_model,
        "x-bifrost-resolved-model": served.deployment,
    }
    if served.fallback_index > 0:
        headers["x-bifrost-fallback-index"] = str(served.fallback_index)
    return headers


def result_response(
    result: TranscriptionResult,
    served: Served,
    *,
    kind: str,
    response_format: str,
    granularities: tuple[str, ...],
    original_model: str,
    text_as_plain: bool,
) -> Response:
    latency_ms = int((time.perf_counter() - served.started) * 1000)
    rendered = formats.render(result, response_format, granularities=granularities)
    headers = route_headers(served, original_model)
    if isinstance(rendered, str):
        if text_as_plain and response_format in TEXT_FORMATS:
            return Response(rendered.encode("utf-8"), media_type=PLAIN, headers=headers)
        rendered = {"text": rendered}
    rendered["extra_fields"] = extra_fields(served, kind, latency_ms=latency_ms)
    return json_response(rendered, headers=headers)


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_events(
    events: AsyncIterator[StreamEvent],
    served: Served,
    *,
    kind: str,
    idle_timeout: float,
) -> AsyncIterator[bytes]:
    """The SSE body: deltas, the done event, then [DONE]; a failure mid-stream is one error event."""
    opened = time.perf_counter()
    previous = opened
    index = 0
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.__anext__(), timeout=idle_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise UpstreamTimeout(
                    f"{served.provider} sent nothing for {idle_timeout:g} s mid-stream; raise "
                    f"network_config.stream_idle_timeout_in_seconds if the model is slow",
                    provider=served.provider, model=served.model,
                ) from None
            now = time.perf_counter()
            if isinstance(event, StreamDelta):
                payload: dict[str, Any] = {"type": "transcript.text.delta", "delta": event.delta}
                latency = int((now - previous) * 1000)
            else:
                assert isinstance(event, StreamDone)
                payload = {"type": "transcript.text.done", "text": event.text}
                usage = formats.usage_dict(event.usage)
                if usage:
                    payload["usage"] = usage
                latency = int((now - opened) * 1000)
            if event.logprobs:
                payload["logprobs"] = [
                    {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)} for lp in event.logprobs
                ]
            payload["extra_fields"] = extra_fields(served, kind, latency_ms=latency, chunk_index=index)
            previous = now
            index += 1
            yield _event(payload)
    except GatewayError as err:
        yield _event(envelope(err))
        return
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug of ours mid-stream: tell the client once, keep the trace in the log
        log.exception("stream failed")
        yield _event(envelope(GatewayError("the stream failed inside the gateway")))
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.debug("closing the upstream stream failed", exc_info=True)
    yield b"data: [DONE]\n\n"


def stream_response(
    events: AsyncIterator[StreamEvent], served: Served, *, kind: str, idle_timeout: float, original_model: str
) -> Response:
    headers = route_headers(served, original_model)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    return StreamingResponse(
        sse_events(events, served, kind=kind, idle_timeout=idle_timeout), media_type=SSE, headers=headers
    )
