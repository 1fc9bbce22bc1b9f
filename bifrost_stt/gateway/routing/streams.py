"""Streams that own their provider's concurrency slot, and what an unreadable upstream answer becomes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

from bifrost_stt.gateway.routing.admission import Lease
from bifrost_stt.kernel.canonical import StreamEvent
from bifrost_stt.kernel.errors import GatewayError, UpstreamUnavailable, scrub_error

log = logging.getLogger("bifrost_stt.router")
T = TypeVar("T")


# What a provider's conversion code raises when an answer is not the shape it documents (a null where a
# number belongs, a string for a list): the upstream's fault, so a 502 that is retried and falls back.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def unreadable(exc: BaseException, provider: str) -> UpstreamUnavailable:
    log.error("%s sent an answer the gateway could not read", provider, exc_info=exc)
    return UpstreamUnavailable(
        f"{provider} sent an answer the gateway could not read ({type(exc).__name__})", provider=provider
    )


async def unreadable_is_upstream(work: Awaitable[T], provider: str) -> T:
    try:
        return await work
    except GatewayError:
        raise
    except UNREADABLE as exc:
        raise unreadable(exc, provider) from exc


def clean(err: GatewayError, secrets: tuple[str, ...], provider: str | None) -> None:
    """Scrub every string of ``err`` in place; name the provider (its kind) when the error does not."""
    scrub_error(err, secrets)
    err.provider = err.provider or provider


class HeldStream:
    """An event stream that owns its provider's concurrency slot until it ends, fails or is closed.

    Closing it also closes the upstream iterator at once, so a client that goes away mid-stream closes
    the upstream connection instead of leaving it to the garbage collector.
    """

    _EMPTY: Any = object()

    def __init__(self, events: AsyncIterator[StreamEvent], *, first: StreamEvent | None = None) -> None:
        self._events = events
        self._first: Any = self._EMPTY if first is None else first
        self._lease: Lease | None = None
        self._closed = False
        self._secrets: tuple[str, ...] = ()
        self._provider: str | None = None

    def hold(self, lease: Lease, *, secrets: tuple[str, ...] = (), provider: str | None = None) -> None:
        """Own ``lease`` until the stream ends; scrub ``secrets`` from any error raised mid-stream."""
        self._lease = lease
        self._secrets = secrets
        self._provider = provider
        if self._closed:
            lease.release()

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._first is not self._EMPTY:
            first, self._first = self._first, self._EMPTY
            return first  # type: ignore[no-any-return]
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._events.__anext__()
        except GatewayError as err:
            # A vendor's mid-stream error may echo the key: it leaves scrubbed, like every other error.
            clean(err, self._secrets, self._provider)
            await self.aclose()
            raise
        except UNREADABLE as exc:
            await self.aclose()
            raise unreadable(exc, self._provider or "the provider") from exc
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._lease is not None:
                self._lease.release()


async def aiter_of(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event
