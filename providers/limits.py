"""Bounded reading of an upstream's answer: decompression, body size, SSE line/event size, stream duration.

An upstream is not trusted to be finite. Every byte an upstream sends reaches us through ``BoundedBody``:

    raw bytes     counted against the body cap too (an endless stream of empty deflate blocks inflates
                  to nothing but still costs reads)
    decompress    gzip / deflate with zlib, ``max_length`` at a time, so a 1 MB bomb never inflates past
                  the cap (no brotli/zstd: the client asks for gzip and deflate only; anything else is a 502)
    body cap      ``Attempt.max_response_bytes`` (network_config.max_response_size_mb) on the decoded bytes
    lines         ``sse_lines``: one line, and one event's data, at most ``Attempt.max_event_bytes``
                  (max_stream_event_size_kb); the whole stream within ``max_stream_seconds``
                  (max_stream_duration_in_seconds, default the request timeout), also while bytes keep coming

Every cap breaks the attempt with a 502 ``UpstreamUnavailable`` naming the provider and the setting; the
router retries and falls back on it like on any other upstream fault. Secrets are masked in every line and
body here (``scrub_bytes``), before anything is parsed.

Cost per request: one zlib object when the answer is compressed, a running counter otherwise.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from bifrost_stt.kernel.capabilities import Attempt
from bifrost_stt.kernel.errors import UpstreamUnavailable, scrub_bytes

STEP = 64 * 1024  # most decoded bytes produced per zlib call
ACCEPT_ENCODING = "gzip, deflate"  # what make_client asks for; what BoundedBody can inflate
_DROPPED = frozenset({"content-encoding", "content-length", "transfer-encoding"})

BODY_SETTING = "max_response_size_mb"
EVENT_SETTING = "max_stream_event_size_kb"
DURATION_SETTING = "max_stream_duration_in_seconds"


def too_much(provider: str, what: str, setting: str, limit: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"{provider} sent {what} over the gateway's limit ({limit}, network_config.{setting}); "
        f"raise network_config.{setting} for this provider if that is legitimate",
        provider=provider,
        code="upstream_limit_exceeded",
        extra={"limit": setting},
    )


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"


class _Inflater:
    """Incremental, bounded decoding of one Content-Encoding."""

    def __init__(self, provider: str, encoding: str) -> None:
        enc = encoding.strip().lower()
        self._zlib: zlib._Decompress | None = None
        self._deflate = False
        if enc in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._zlib = zlib.decompressobj()
            self._deflate = True  # zlib-wrapped by the RFC; raw deflate in practice too (as httpx allows)
        elif enc not in ("", "identity"):
            raise UpstreamUnavailable(
                f"{provider} answered with Content-Encoding {encoding[:40]!r}, which the gateway does not accept "
                f"(it asks for {ACCEPT_ENCODING})",
                provider=provider,
            )
        self._provider = provider

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``data``, each at most STEP bytes, produced one at a time: the caller
        counts each before the next is inflated."""
        if self._zlib is None:
            if data:
                yield data
            return
        data_at_start = data
        produced = False
        try:
            while True:
                piece = self._zlib.decompress(data, STEP)
                data = self._zlib.unconsumed_tail
                if piece:
                    produced = True
                    yield piece
                # a full piece may leave output inside zlib even with no input left: ask again
                if self._zlib.eof or (not data and len(piece) < STEP):
                    break
        except zlib.error:
            if self._deflate and not produced:  # not zlib-wrapped: raw deflate, from the start of this piece
                self._deflate = False
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                yield from self.feed(data_at_start)
                return
            raise UpstreamUnavailable(
                f"{self._provider} sent a compressed answer that does not decompress", provider=self._provider
            ) from None
        self._deflate = False  # the first piece decoded: the wrapping is settled


class BoundedBody:
    """The decoded, scrubbed bytes of one streamed ``httpx.Response``, within ``attempt``'s caps."""

    def __init__(self, provider: str, response: httpx.Response, attempt: Attempt, secrets: tuple[str, ...]) -> None:
        self.provider = provider
        self.response = response
        self.limit = attempt.max_response_bytes
        self.secrets = secrets
        self._inflater = _Inflater(provider, response.headers.get("content-encoding", ""))
        self.raw = 0
        self.decoded = 0

    def _count(self, raw: int, decoded: int) -> None:
        self.raw += raw
        self.decoded += decoded
        if self.decoded > self.limit or self.raw > self.limit:
            raise too_much(self.provider, "an answer", BODY_SETTING, _size(self.limit))

    async def chunks(self, deadline: float | None = None, on_late: str = "") -> AsyncIterator[bytes]:
        """Decoded pieces as they arrive. With ``deadline`` (loop time), a 502 naming ``on_late`` past it."""
        loop = asyncio.get_running_loop()
        raw = self.response.aiter_raw().__aiter__()
        while True:
            if deadline is None:
                try:
                    chunk = await raw.__anext__()
                except StopAsyncIteration:
                    return
            else:
                late = too_much(self.provider, "a stream that went on", DURATION_SETTING, on_late)
                if deadline <= loop.time():
                    raise late
                window = asyncio.timeout_at(deadline)
                try:
                    async with window:
                        chunk = await raw.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if window.expired():
                        raise late from None
                    raise
            self._count(len(chunk), 0)
            for piece in self._inflater.feed(chunk):
                self._count(0, len(piece))
                yield piece

    async def read(self, deadline: float | None = None) -> bytes:
        """The whole body, decoded and scrubbed (a 502 past the cap, raised as soon as it is passed).

        ``deadline`` (loop time): ``TimeoutError`` once past it, checked per decoded piece too. Reads that
        never wait (a buffered, highly compressed body) give the event loop no chance to fire a timer.
        """
        loop = asyncio.get_running_loop()
        parts = []
        async for piece in self.chunks():
            parts.append(piece)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError
        return scrub_bytes(b"".join(parts), self.secrets)

    async def replaced(self, deadline: float | None = None) -> httpx.Response:
        """A read copy of the response: the decoded, scrubbed body, no encoding headers, secrets masked in
        the headers too. The streamed original is left for the caller to close."""
        body = await self.read(deadline)
        original = self.response
        headers = [
            (k, scrub_bytes(v, self.secrets))
            for k, v in original.headers.raw
            if k.decode("latin-1").lower() not in _DROPPED
        ]
        return httpx.Response(
            original.status_code, headers=headers, content=body, request=original.request,
            extensions=original.extensions,
        )


async def sse_lines(
    body: BoundedBody, *, max_event: int, deadline: float, duration: float
) -> AsyncIterator[str]:
    """The stream's lines (without their line ending), scrubbed, each at most ``max_event`` bytes."""
    buffer = bytearray()
    limit = _size(max_event)
    async for piece in body.chunks(deadline, f"{duration:g} s"):
        buffer += piece
        start = 0
        while True:
            cut = _line_end(buffer, start)
            if cut is None:
                break
            end, after = cut
            yield _line(buffer[start:end], body.secrets)
            start = after
        if start:
            del buffer[:start]
        if len(buffer) > max_event:
            raise too_much(body.provider, "a stream line", EVENT_SETTING, limit)
    if buffer:
        yield _line(buffer, body.secrets)


def _line_end(buffer: bytearray, start: int) -> tuple[int, int] | None:
    """``(end of line, start of the next)`` for the first line ending at or after ``start``: \\n, \\r\\n or a
    lone \\r; a \\r at the very end waits for the next piece (it may be half of \\r\\n)."""
    n = buffer.find(b"\n", start)
    r = buffer.find(b"\r", start, n if n >= 0 else len(buffer))
    if r >= 0:
        if r + 1 == len(buffer):
            return None
        return r, r + 2 if buffer[r + 1] == 0x0A else r + 1
    if n >= 0:
        return n, n + 1
    return None


def _line(raw: bytes | bytearray, secrets: tuple[str, ...]) -> str:
    return scrub_bytes(bytes(raw), secrets).decode("utf-8", "replace")
