"""One upstream exchange, the same for every vendor: send within the attempt's deadline, map failures,
read server-sent events. Vendors differ only in how their error bodies look, which they say with a hook.

    fetch(...)        one request/answer; raises the mapped UpstreamError; returns the read response
    open_events(...)  an SSE stream as (event name, data) pairs; errors before the first event raise from
                      the first ``__anext__`` (so the router can still retry or fall back)
    open_answer(...)  the same, or one ``Whole`` when the upstream answered the stream request with JSON

Error hooks (both optional, tried in this order for a non-2xx answer):
    vendor_error(status, parsed JSON or None, retry headers) -> UpstreamError | None
    rewrite_error(status, raw body) -> an OpenAI-style error body | None, then mapped as OpenAI's
Anything the hooks leave is mapped by ``providers.http.raise_for_upstream``.

Every answer is read through ``providers.limits`` (bounded decompression, body / line / event / duration
caps, secrets masked before anything is parsed): no vendor module reads a response body itself.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import orjson

from bifrost_stt.kernel.errors import UpstreamError, UpstreamUnavailable
from bifrost_stt.kernel.capabilities import Attempt
from bifrost_stt.providers.http import map_transport_errors, raise_for_upstream
from bifrost_stt.providers.limits import EVENT_SETTING, BoundedBody, sse_lines, too_much

VendorError = Callable[[int, Any, Mapping[str, str]], UpstreamError | None]
RewriteError = Callable[[int, bytes], bytes | None]

IDLE_SETTING = "stream_idle_timeout_in_seconds"
REQUEST_SETTING = "default_request_timeout_in_seconds"


def key_secrets(attempt: Attempt) -> tuple[str, ...]:
    """The values that must never leave the gateway for this attempt (its key's)."""
    key = attempt.key
    return (key.value.reveal(),) if key is not None and key.value else ()


def _retry_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}


async def check(
    provider: str,
    response: httpx.Response,
    secrets: tuple[str, ...],
    *,
    expect_json: bool = True,
    vendor_error: VendorError | None = None,
    rewrite_error: RewriteError | None = None,
) -> None:
    """Raise the gateway's error for a failed (or unusable) answer; return for a good one."""
    if not response.is_success and (vendor_error is not None or rewrite_error is not None):
        body = await response.aread()
        if vendor_error is not None:
            try:
                data = orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError:
                data = None
            error = vendor_error(response.status_code, data, _retry_headers(response))
            if error is not None:
                raise error
        if rewrite_error is not None:
            fixed = rewrite_error(response.status_code, body)
            if fixed is not None:
                headers = {**_retry_headers(response), "content-type": "application/json"}
                response = httpx.Response(response.status_code, headers=headers, content=fixed)
    await raise_for_upstream(provider, response, expect_json=expect_json, secrets=secrets)


async def fetch(
    provider: str,
    client: httpx.AsyncClient,
    request: httpx.Request,
    attempt: Attempt,
    *,
    expect_json: bool = True,
    vendor_error: VendorError | None = None,
    rewrite_error: RewriteError | None = None,
) -> httpx.Response:
    """Send ``request`` and read its answer (bounded, see ``providers.limits``) within ``attempt.timeout``."""
    secrets = key_secrets(attempt)
    with map_transport_errors(provider, timeout=attempt.timeout, secrets=secrets):
        async with asyncio.timeout(attempt.timeout) as window:
            streamed = await client.send(request, stream=True)
            try:
                response = await BoundedBody(provider, streamed, attempt, secrets).replaced(window.when())
            finally:
                await streamed.aclose()
            await check(provider, response, secrets, expect_json=expect_json,
                        vendor_error=vendor_error, rewrite_error=rewrite_error)
    return response


async def sse_events(
    provider: str, lines: AsyncIterator[str], max_event: int
) -> AsyncIterator[tuple[str | None, str]]:
    """``(event name or None, data)`` for each server-sent event, multi-line data joined by newlines; an
    event whose data passes ``max_event`` bytes (counted as characters) fails the stream with a 502."""
    name: str | None = None
    data: list[str] = []
    size = 0
    async for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data, size = None, [], 0
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            size += len(line)
            if size > max_event:
                raise too_much(provider, "a stream event", EVENT_SETTING, f"{max_event // 1024} KB")
    if data:
        yield name, "\n".join(data)


async def open_events(
    provider: str,
    client: httpx.AsyncClient,
    request: httpx.Request,
    attempt: Attempt,
    *,
    idle_timeout: float,
    vendor_error: VendorError | None = None,
    rewrite_error: RewriteError | None = None,
) -> AsyncGenerator[tuple[str | None, str], None]:
    """The upstream's server-sent events; the connection is closed when the iterator ends or is closed.

    The whole stream, its opening included, must end within ``attempt.max_stream_seconds`` (default
    ``attempt.timeout``); each line and event within ``attempt.max_event_bytes``. Any answer but
    ``text/event-stream`` is an error (``open_answer`` also takes a JSON one).
    """
    answer = open_answer(provider, client, request, attempt, idle_timeout=idle_timeout, json_ok=False,
                         vendor_error=vendor_error, rewrite_error=rewrite_error)
    async with aclosing(answer) as items:
        async for item in items:
            if isinstance(item, Whole):  # not with json_ok=False; kept for the type
                raise _not_sse(provider, item.response.headers.get("content-type", ""))
            yield item


@dataclass(frozen=True, slots=True)
class Whole:
    """A stream request answered with one JSON body instead of server-sent events."""

    response: httpx.Response  # already read (bounded): ``providers.http.parse_json`` gives the vendor's object


def _not_sse(provider: str, content_type: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"{provider} answered a stream request with {content_type or 'no content type'} instead of text/event-stream",
        provider=provider,
    )


async def open_answer(
    provider: str,
    client: httpx.AsyncClient,
    request: httpx.Request,
    attempt: Attempt,
    *,
    idle_timeout: float,
    json_ok: bool = True,
    vendor_error: VendorError | None = None,
    rewrite_error: RewriteError | None = None,
) -> AsyncGenerator[tuple[str | None, str] | Whole, None]:
    """The upstream's server-sent events, or (``json_ok``) one ``Whole`` when it answered the stream request
    with JSON (a model that ignores ``stream``). Bounds and closing as ``open_events``."""
    secrets = key_secrets(attempt)
    duration = attempt.max_stream_seconds or attempt.timeout
    deadline = asyncio.get_running_loop().time() + duration
    # A stream request's reads are bounded by the idle timeout, the wait for its headers included: when
    # that is the shorter bound, it is the one to name in a timeout error.
    idle_first = idle_timeout < attempt.timeout
    wait, setting = (idle_timeout, IDLE_SETTING) if idle_first else (attempt.timeout, REQUEST_SETTING)
    with map_transport_errors(provider, timeout=wait, setting=setting, secrets=secrets):
        async with asyncio.timeout(attempt.timeout):
            response = await client.send(request, stream=True)
    try:
        body = BoundedBody(provider, response, attempt, secrets)
        content_type = response.headers.get("content-type", "")
        if not response.is_success or "text/event-stream" not in content_type:
            with map_transport_errors(provider, timeout=attempt.timeout, secrets=secrets):
                async with asyncio.timeout(attempt.timeout) as window:
                    read = await body.replaced(window.when())
                await check(provider, read, secrets, vendor_error=vendor_error, rewrite_error=rewrite_error)
            if json_ok and "json" in content_type:
                yield Whole(read)
                return
        if "text/event-stream" not in content_type:
            raise _not_sse(provider, content_type)
        with map_transport_errors(provider, timeout=idle_timeout, setting=IDLE_SETTING, secrets=secrets):
            lines = sse_lines(body, max_event=attempt.max_event_bytes, deadline=deadline, duration=duration)
            async for event in sse_events(provider, lines, attempt.max_event_bytes):
                yield event
    finally:
        await response.aclose()


def event_json(provider: str, payload: str) -> Any:
    """One event's data as JSON; anything else is the upstream's fault (502)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"{provider} sent a stream event that is not JSON", provider=provider) from None
