"""The cache's HTTP side: answering a hit (JSON, text or a replayed SSE stream) and the two clear operations.

A hit is rendered exactly as the provider's answer was, from the stored canonical result, with the headers
of the target that first answered (x-bifrost-provider ...) and ``extra_fields.cache_debug``; a streamed
request gets the stored answer as SSE deltas and a done event that carries ``cache_debug``. The clear
operations sit under ``/api/``, behind the admin credential (enforced for every ``/api/*`` path by the
server, not here).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.responses import Response

from bifrost_stt.gateway.cache.policy import Hit, Ticket
from bifrost_stt.gateway.compose import Gateway
from bifrost_stt.gateway.render import formats
from bifrost_stt.gateway.routing.router import Served
from bifrost_stt.handlers import outbound
from bifrost_stt.handlers.inbound import Route
from bifrost_stt.kernel.canonical import StreamDone, StreamEvent, TranscriptionRequest

REPLAY_IDLE_TIMEOUT = 60.0  # a replay never waits on anyone; the value only satisfies the stream writer


def hit_served(hit: Hit) -> Served:
    """The stored answer's target, as if it had just answered (``latency`` in extra_fields is the hit's)."""
    origin = hit.origin
    return Served(
        provider=origin.provider,
        model=origin.model,
        deployment=origin.deployment,
        fallback_index=origin.fallback_index,
        started=time.perf_counter(),
        reported=origin.reported or origin.provider,
        stream_idle_timeout=REPLAY_IDLE_TIMEOUT,
    )


def hit_response(hit: Hit, request: TranscriptionRequest, route: Route, original: str) -> Response:
    """The answer to a request found in the cache; no provider is called."""
    served = hit_served(hit)
    if request.stream:
        debug = {"cache_debug": hit.debug}

        async def on_done(_done: StreamDone) -> Mapping[str, Any]:
            return debug

        return outbound.stream_response(
            _replay(formats.synthesize_stream(hit.result)),
            served,
            original_model=original,
            on_done=on_done,
        )
    return outbound.result_response(
        hit.result,
        served,
        response_format=request.response_format,
        granularities=request.timestamp_granularities,
        original_model=original,
        text_as_plain=route.text_as_plain,
        cache_debug=hit.debug,
    )


def store_on_done(ticket: Ticket | None, served: Served) -> outbound.OnDone | None:
    """For a live stream: store its answer when its done event arrives, and put cache_debug on that event."""
    if ticket is None:
        return None

    async def on_done(done: StreamDone) -> Mapping[str, Any] | None:
        debug = await ticket.store_done(done, served)
        return None if debug is None else {"cache_debug": debug}

    return on_done


async def _replay(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


def _cleared(removed: int, what: str) -> Response:
    if removed:
        message = f"removed {removed} cache {'entry' if removed == 1 else 'entries'} for {what}"
    else:
        message = f"no cache entry for {what} (never stored, expired, or already cleared)"
    return outbound.json_response({"message": message, "removed": removed})


class CacheHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # Parameter names as the contract spells them (Connexion passes path parameters by name).
    async def clear_by_request_id(self, requestId: str) -> Response:  # noqa: N803
        removed = await self.gateway.cache.clear_id(requestId)
        return _cleared(removed, f"request {requestId}")

    async def clear_by_cache_key(self, cacheKey: str) -> Response:  # noqa: N803
        removed = await self.gateway.cache.clear_partition(cacheKey)
        return _cleared(removed, f"cache key {cacheKey}")

    def operations(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "clearCacheByRequestId": self.clear_by_request_id,
            "clearCacheByCacheKey": self.clear_by_cache_key,
        }
